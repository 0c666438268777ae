import pytest

from flywheel.config import PROFILES, ConfigError, load_config


@pytest.mark.parametrize("profile", list(PROFILES))
def test_profiles_resolve(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile


def test_paper_profile_is_paper_scale():
    cfg = load_config("paper")
    assert cfg.model.preset == "2b" and cfg.train.batch_size == 1920 and cfg.sim.image_size == 224
    assert cfg.eval.num_candidates == 8 and cfg.eval.world_model_samples == 3 and cfg.eval.value_samples == 5


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 11\n  lr: 0.5\nsim:\n  image_size: 48\n")
    cfg = load_config("smoke", f, ["train.steps=12", "sim.tasks=[1,2]"])
    assert (cfg.train.steps, cfg.train.lr, cfg.sim.image_size, cfg.sim.tasks) == (12, 0.5, 48, [1, 2])


@pytest.mark.parametrize(("args", "match"), [
    (("nope",), "unknown profile 'nope'"),
    (("cpu", None, ["train.stepz=3"]), "unknown config key: train.stepz"),
    (("cpu", None, ["bogus.key=3"]), "unknown config key: bogus"),
    (("cpu", None, ["train.steps=0"]), "train.steps"),
    (("cpu", None, ["noequals"]), "section.key=value"),
    (("cpu", "/does/not/exist.yaml"), "does not exist"),
])
def test_bad_config_is_one_clear_error(args, match):
    with pytest.raises(ConfigError, match=match):
        load_config(*args)


def test_overrides_do_not_leak_into_profiles():
    load_config("cpu", None, ["train.steps=3"])
    assert load_config("cpu").train.steps == PROFILES["cpu"]["train"]["steps"] != 3


def test_inference_settings_make_different_model_episodes():
    """An ablation of how a model acts (executed actions, solver steps, planning budget) in the same workspace
    gets its own episodes instead of finding the other setting's episodes already in the lake."""
    from dataclasses import replace

    from flywheel.recordings import EpisodeRequest
    from tasks.rollouts import inference_settings

    def req(overrides, planning=False):
        cfg = load_config("cpu", overrides=overrides)
        return replace(EpisodeRequest("libero_object", 0, 40, 7, policy="model", policy_version="m/v1",
                                      planning=planning), settings=inference_settings(cfg, planning))

    base = req(["model.execute_actions=16"])
    assert base.settings == "k16.s4"
    assert req(["model.execute_actions=null"]).episode_id == base.episode_id  # same behaviour, same id
    variants = [req([]), req(["model.execute_actions=16", "eval.sampler_steps=5"]),
                req(["model.execute_actions=16"], planning=True),
                req(["model.execute_actions=16", "eval.num_candidates=2"], planning=True),
                req(["model.execute_actions=16", "eval.value_steps=4"], planning=True)]
    assert variants[0].settings == "k8.s4"  # the cpu profile re-queries after 8 actions
    assert len({base.episode_id, *(r.episode_id for r in variants)}) == 6
    assert variants[2].settings == "k16.s4.N4W1V2.j0.0"  # the cpu profile's planning budget


def _bench_learning():
    from tests.fixtures.benchmarks import load_benchmark

    return load_benchmark("bench_learning")


def test_the_learning_benchmark_settings_are_a_valid_deterministic_config():
    """bench_learning's settings load on the ``cpu`` profile, and under a time budget nothing in them depends on
    the machine's measured speed (so a crashed run resumes from its cached stages)."""
    bench = _bench_learning()
    timed = bench.settings(quick=False, minutes=30.0, steps=None)
    assert timed == bench.settings(quick=False, minutes=30.0, steps=None)
    cfg = load_config("cpu", overrides=timed)
    assert cfg.train.minutes == 30 and cfg.refine.minutes == 7.5 and cfg.train.steps == bench.STEP_CAP
    assert cfg.refine.steps == bench.STEP_CAP  # the cpu profile's refine.steps must not cap the budget
    assert cfg.demos.per_task == 40
    assert cfg.sim.tasks == list(range(10)) and cfg.eval.episodes_per_task == 10
    fixed = load_config("cpu", overrides=bench.settings(quick=True, minutes=10.0, steps=4000))
    assert fixed.train.minutes is None and fixed.train.steps == 4000 and fixed.refine.steps == 1000
    assert fixed.refine.minutes is None
    assert fixed.sim.tasks == [0, 1]


def test_the_cpu_profile_is_the_quick_learning_benchmark():
    """The laptop cycle (README's first command) trains with the settings `bench_learning.py --quick` measured."""
    bench = _bench_learning()
    quick = load_config("cpu", overrides=bench.settings(quick=True, minutes=10.0, steps=None))
    cpu = load_config("cpu")
    for section in ("sim", "demos", "model", "rollout", "eval", "cycle"):
        assert getattr(cpu, section) == getattr(quick, section), section
    assert cpu.train.minutes == quick.train.minutes and cpu.refine.minutes == quick.refine.minutes
    assert cpu.train.steps >= 100_000  # a cap: a 2-core CPU runs ~10-20 steps/s
