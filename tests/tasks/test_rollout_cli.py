"""`flywheel demos generate` and `flywheel rollout` against the real LIBERO simulator on local Ray."""

import functools
import json

import pytest
from typer.testing import CliRunner

from flywheel.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.sim


def _query(sql):
    res = runner.invoke(app, ["query", sql, "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_demos_then_expert_and_random_rollouts(home, ray_local):
    res = runner.invoke(app, ["demos", "generate", "--suite", "libero_object", "--tasks", "0", "--per-task", "2",
                              "--profile", "smoke"])
    assert res.exit_code == 0, res.output
    assert "Scripted expert success per task" in res.output
    demos = _query("select count(*) as n, bool_and(success) as ok from episodes where source = 'demo'")
    assert demos[0]["n"] >= 1 and demos[0]["ok"]
    assert (home / "lake" / "meta" / "stats" / "libero_object.json").exists()

    for policy in ("expert", "random"):
        res = runner.invoke(app, ["rollout", "--policy", policy, "--suite", "libero_object", "--tasks", "0",
                                  "--episodes", "2", "--profile", "smoke"])
        assert res.exit_code == 0, res.output
    rows = _query("select policy, count(*) as n, sum(success::int) as s, min(length) as min_len, "
                  "sum(case when error is null then 0 else 1 end) as errors "
                  "from episodes where source = 'rollout' group by policy order by policy")
    by = {r["policy"]: r for r in rows}
    assert by["random"]["n"] == 2 and by["random"]["s"] == 0 and by["random"]["min_len"] == 280  # full step limit
    assert by["scripted_expert"]["n"] == 2 and by["scripted_expert"]["s"] == 2
    assert all(r["errors"] == 0 for r in rows)
    steps = _query("select count(*) as n, sum(reward) as r from steps where episode_id in "
                   "(select episode_id from episodes where source = 'rollout')")
    assert steps[0]["r"] == 2.0
    # re-running the same rollout does not duplicate (deterministic episode ids)
    res = runner.invoke(app, ["rollout", "--policy", "random", "--suite", "libero_object", "--tasks", "0",
                              "--episodes", "2", "--profile", "smoke"])
    assert res.exit_code == 0
    assert _query("select count(*) as n from episodes where source = 'rollout'")[0]["n"] == 4


def test_perturbed_goal_state_demos_feed_an_object_state_model(home, ray_local, tmp_path):
    """Perturbed-expert demos (``demos.action_noise``) store the expert's own actions as labels; demos record
    LIBERO's 20-float goal state (``sim.object_state=goal``, the default) and its statistics; a model with the
    object-state frame starts from them and rolls out with it; a ``full`` object state is refused first."""
    res = runner.invoke(app, ["demos", "generate", "--suite", "libero_object", "--tasks", "0", "--per-task", "1",
                              "--profile", "smoke", "--set", "demos.action_noise=0.1"])
    assert res.exit_code == 0, res.output
    stats = json.loads((home / "lake" / "meta" / "stats" / "libero_object.json").read_text())
    assert len(stats["object_state"]["min"]) == 20
    demo = _query("select e.policy, count(*) as n, count(s.expert_action) as labelled, "
                  "avg(abs(s.action[1] - s.expert_action[1])) as gap from episodes e join steps s using (episode_id) "
                  "where e.source = 'demo' group by 1")
    assert len(demo) == 1 and demo[0]["policy"] == "scripted_expert_noisy" and demo[0]["n"] == demo[0]["labelled"]
    assert 0.02 < demo[0]["gap"] < 0.2  # |N(0, 0.1)| averages 0.08 (less where clipped)
    obj = ["--set", "model.object_state=true"]
    res = runner.invoke(app, ["model", "init", "--suite", "libero_object", "--profile", "smoke", *obj,
                              "--out", str(tmp_path / "init")])
    assert res.exit_code == 0, res.output
    rollout = ["rollout", "--policy", str(tmp_path / "init"), "--suite", "libero_object", "--tasks", "0",
               "--episodes", "1", "--profile", "smoke"]
    res = runner.invoke(app, [*rollout, "--set", "sim.object_state=full"])
    assert res.exit_code != 0 and "sim.object_state=goal" in res.output
    res = runner.invoke(app, rollout)
    assert res.exit_code == 0, res.output
    rows = _query("select count(*) as n, count(error) as errors from episodes where policy = 'model'")
    assert rows == [{"n": 1, "errors": 0}]


def test_bad_rollout_arguments(home):
    res = runner.invoke(app, ["rollout", "--policy", "runs:/abc/model"])
    assert res.exit_code == 2 and "runs:/ URIs are not supported" in res.output
    res = runner.invoke(app, ["rollout", "--policy", "models:/cosmos-policy@candidate"])
    assert res.exit_code == 2 and "nothing is registered yet" in res.output
    res = runner.invoke(app, ["rollout", "--suite", "mujoco_soccer"])
    assert res.exit_code == 2 and "unknown suite" in res.output


def test_checkpoint_whose_tokenizer_is_not_here_is_refused_before_any_episode(home, tmp_path):
    """A checkpoint trained with a Wan VAE this machine does not have (another VAE is configured): one error
    line naming both fingerprints, exit 2, nothing written to the lake."""
    import numpy as np

    from cosmos_policy.checkpoint_io import save_checkpoint
    from cosmos_policy.configuration_cosmos_policy import get_config
    from cosmos_policy.latent_layout import libero_layout
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.normalization import compute_stats
    from tests.fixtures.pretrained import save_tiny_pipeline, save_wan_vae

    pipeline = save_tiny_pipeline(tmp_path / "pipeline")
    model = CosmosPolicyModel.from_pretrained(get_config("tiny", libero_layout(latent_hw=8)), pipeline)
    rng = np.random.default_rng(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, compute_stats([rng.normal(size=(8, 9))],
                                                                   [rng.uniform(-1, 1, (8, 7))]))
    save_wan_vae(tmp_path / "other_vae", seed=1)
    pipeline.rename(tmp_path / "gone")  # the folder it was saved from is not on this machine
    res = runner.invoke(app, ["rollout", "--policy", str(ckpt), "--suite", "libero_object", "--episodes", "1",
                              "--profile", "smoke", "--set", f"model.vae_path={tmp_path / 'other_vae'}",
                              "--set", f"model.t5_path={tmp_path / 'gone'}"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Wan VAE tokenizer wan-" in res.output and "model.vae_path" in res.output
    assert not (home / "lake" / "episodes").exists() or not list((home / "lake" / "episodes").rglob("*.parquet"))


@pytest.mark.slow
def test_killing_a_libero_worker_still_yields_n_episodes(ray_local, tmp_path):
    from flywheel.recordings import EpisodeRequest
    from sims.factory import make_env
    from storage_schemas import LakeWriter
    from storage_schemas.views import connect
    from tasks.rollout_engine import BehaviourSpec, RolloutEngine

    writer = LakeWriter(tmp_path / "lake")
    engine = RolloutEngine(ray_local, functools.partial(make_env, "libero_object", 32), BehaviourSpec("random"),
                           num_workers=2)
    engine.wait_ready()
    reqs = [EpisodeRequest("libero_object", 0, i, seed=i, policy="random", image_every=0) for i in range(4)]
    killed = []

    def kill_second_submission(n, worker):
        if n == 2 and not killed:
            ray_local.kill(worker, no_restart=False)
            killed.append(True)

    try:
        stats = engine.run(reqs, writer, dataset_id="kill-test", on_submit=kill_second_submission)
    finally:
        engine.shutdown()
    con = connect(writer.layout)
    assert killed and stats.retries >= 1
    assert con.sql("select count(*), count(distinct episode_id) from episodes").fetchall()[0] == (4, 4)


def test_model_checkpoint_rollouts_batched(home, ray_local, tmp_path):
    from tasks.registry import checkpoint_digest
    from tests.fixtures.checkpoints import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    for extra in ([], ["--planning"]):
        res = runner.invoke(app, ["rollout", "--policy", str(ckpt), "--suite", "libero_object", "--tasks", "0",
                                  "--episodes", "2", "--profile", "smoke", *extra])
        assert res.exit_code == 0, res.output
    rows = _query("select planning, count(*) as n, min(length) as min_len, count(error) as errors, "
                  "any_value(policy_version) as v from episodes where policy = 'model' group by planning order by planning")
    assert [(r["planning"], r["n"], r["errors"]) for r in rows] == [(False, 2, 0), (True, 2, 0)]
    assert rows[0]["v"] == f"sha-{checkpoint_digest(ckpt)}"  # the content, never the path
    imgs = _query("select count(*) as n from steps s join episodes e using (episode_id) "
                  "where e.policy = 'model' and s.images is not null")
    assert imgs[0]["n"] >= 4


def test_rollout_rejects_a_folder_that_is_not_a_checkpoint(home, tmp_path):
    res = runner.invoke(app, ["rollout", "--policy", str(tmp_path)])
    assert res.exit_code == 2 and "not a cosmos_policy checkpoint" in res.output


def test_rollout_refuses_a_checkpoint_of_another_layout_before_any_episode(home, tmp_path, monkeypatch):
    from cosmos_policy.checkpoint_io import save_untrained_checkpoint
    from cosmos_policy.latent_layout import robocasa_layout

    monkeypatch.setattr("tasks.rollouts._engine", lambda *a, **k: pytest.fail("Ray started for a wrong checkpoint"))
    robo = save_untrained_checkpoint(tmp_path / "robo", robocasa_layout(latent_hw=4), "tiny")
    res = runner.invoke(app, ["rollout", "--policy", str(robo), "--suite", "libero_object", "--profile", "smoke"])
    assert res.exit_code == 2 and "suite 'libero_object' needs 'libero'" in res.output


def test_robocasa_fixture_rollout_three_cameras(home, ray_local):
    res = runner.invoke(app, ["rollout", "--policy", "random", "--suite", "robocasa_fixture", "--tasks", "0",
                              "--episodes", "2", "--profile", "smoke", "--set", "demos.image_every=50"])
    assert res.exit_code == 0, res.output
    eps = _query("select count(*) as n, min(len(cameras)) as cams, min(action_dim) as a, min(proprio_dim) as p, "
                 "bool_and(instruction like '%not the benchmark%') as labelled from episodes where suite = 'robocasa_fixture'")
    assert eps == [{"n": 2, "cams": 3, "a": 12, "p": 68, "labelled": True}]
    views = _query("select min(cardinality(images)) as views, count(*) as rows from steps "
                   "where images is not null and episode_id in (select episode_id from episodes where suite = 'robocasa_fixture')")
    assert views[0]["views"] == 3 and views[0]["rows"] >= 4
