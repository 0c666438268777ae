"""Held-out evaluation pieces: init-state split, AUC, promotion test, evaluations rows, offline value/world-model
scores on a real (untrained) checkpoint and synthetic lake episodes."""

import math

import numpy as np
import pytest

from storage_schemas import Source
from tasks.evaluation import evaluation_rows, offline_scores, promotion_test
from tasks.rollouts import RolloutSummary, build_requests, init_states_of


def test_heldout_init_states_never_overlap_training_ones():
    train, held = init_states_of("train", 50, 10), init_states_of("heldout", 50, 10)
    assert train == list(range(40)) and held == list(range(40, 50))
    reqs = build_requests("libero_object", [0, 1], 45, iteration=1, source=Source.ROLLOUT, policy="model", seed=0,
                          image_every=4, init_states=train)
    assert {r.init_state_index for r in reqs} == set(range(40))  # wraps around, never into the held-out states
    with pytest.raises(ValueError, match="heldout_init_states=50 leaves no training"):
        init_states_of("train", 50, 50)
    with pytest.raises(ValueError, match="must be positive"):
        build_requests("libero_object", [0], 0, iteration=1, source=Source.EVAL, policy="model", seed=0, image_every=4)


def test_roc_auc_matches_the_definition():
    from cosmos_policy.evaluation import roc_auc

    assert roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5  # ties count half
    # brute force over all (positive, negative) pairs
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 4, 30).astype(float), rng.random(30) < 0.5
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
    assert math.isnan(roc_auc([0.3, 0.4], [True, True]))  # undefined with one outcome, not 0.5


def test_promotion_needs_a_significant_difference():
    assert not promotion_test((3, 4), (2, 4), alpha=0.1).promote  # higher raw rate, not significant
    d = promotion_test((18, 20), (5, 20), alpha=0.05)
    assert d.promote and d.p_value < 1e-4 and "beats" in d.reason
    assert not promotion_test((5, 20), (18, 20), alpha=0.05).promote  # one-sided: worse never promotes
    with pytest.raises(ValueError, match="evaluated episodes"):
        promotion_test((0, 0), (1, 2), alpha=0.05)


def test_evaluation_rows_land_in_the_evaluations_table(tmp_path):
    from storage_schemas import LakeWriter
    from storage_schemas.views import connect

    summary = RolloutSummary("libero_object", "model", "eval", 2, 5, 3, 0, 0, 1.0, 100, 5, {0: (3, 2), 1: (2, 1)})
    writer = LakeWriter(tmp_path / "lake")
    writer.init()
    for _ in range(2):  # idempotent: a re-run replaces, never duplicates
        writer.write_evaluations(evaluation_rows(summary, "cosmos-policy/v3", True, 2))
    rows = connect(writer.layout).sql("SELECT iteration, task_id, planning, n_success, n_episodes, ci_low < "
                                      "success_rate AND success_rate < ci_high FROM evaluations ORDER BY task_id"
                                      ).fetchall()
    assert rows == [(2, 0, True, 2, 3, True), (2, 1, True, 1, 2, True)]
    # Another planning setting of the same system is another evaluation, not a replacement.
    writer.write_evaluations(evaluation_rows(summary, "cosmos-policy/v3", True, 2, "k16.s4.N8W1V2.j0.0"))
    got = connect(writer.layout).sql("SELECT inference, sum(n_episodes) FROM evaluations GROUP BY 1 ORDER BY 1"
                                     ).fetchall()
    assert got == [("k16.s4.N8W1V2.j0.0", 5), (None, 5)]


def test_evaluate_model_checks_its_modes_before_any_work(tmp_path):
    from flywheel.config import load_config
    from flywheel.workspace import Workspace
    from tasks.evaluation import evaluate_model

    ws = Workspace.from_env(tmp_path)
    cfg = load_config("smoke", None, [])
    for modes in ((), ("greedy",)):
        with pytest.raises(ValueError, match="non-empty subset"):
            evaluate_model(cfg, ws, "models:/nothing/1", modes=modes)
    with pytest.raises(ValueError, match="planning mode needs eval.planning=true"):
        evaluate_model(load_config("smoke", None, ["eval.planning=false", "cycle.planner=same"]), ws, "models:/nothing/1",
                       modes=("planning",))


def test_offline_scores_of_a_checkpoint_on_recorded_episodes(tmp_path):
    from flywheel.config import load_config
    from flywheel.workspace import Workspace
    from tasks.registry import ResolvedModel
    from tests.fixtures.checkpoints import make_tiny_checkpoint
    from tests.fixtures.lake import write_synthetic_episodes

    ws = Workspace(tmp_path / "home").ensure()
    ids = write_synthetic_episodes(ws.lake.root, demos=1, successes=2, failures=2, length=40)
    cfg = load_config("smoke", overrides=["cycle.value_steps_per_episode=2"])
    model = ResolvedModel(make_tiny_checkpoint(tmp_path / "ckpt"), "sha-test", False)
    scores = offline_scores(cfg, ws, model, ids[1:], seed=0)
    assert (scores.episodes, scores.successes, scores.samples) == (4, 2, 8)
    assert 0.0 <= scores.value_auc <= 1.0 and scores.wm_mse > 0 and scores.wm_mse_failures > 0
    assert len(scores.calibration) == 8 and all(0 <= v <= 1 for v, _ in scores.calibration)
    again = offline_scores(cfg, ws, model, ids[1:], seed=0)
    assert again.value_auc == scores.value_auc and again.wm_mse == scores.wm_mse  # seeded: reproducible
    only_failures = offline_scores(cfg, ws, model, ids[3:], seed=0)
    assert math.isnan(only_failures.value_auc)
    # The sampled-chunk action L1 is taken on clean scripted-expert episodes only (the demo here).
    assert math.isnan(scores.action_l1) and scores.action_samples == 0
    with_demo = offline_scores(cfg, ws, model, ids, seed=0)
    assert with_demo.action_samples == 2 and 0.05 < with_demo.action_l1 < 2.0  # untrained: far from the demo


def test_rollout_policy_factory_applies_eval_sampler_steps_and_planning(tmp_path):
    from tasks.rollouts import load_cosmos_policy
    from tests.fixtures.checkpoints import make_tiny_checkpoint

    ckpt = str(make_tiny_checkpoint(tmp_path / "ckpt"))
    policy = load_cosmos_policy(ckpt, True, 3, 1, 2, seed=0, sampler_steps=2)
    assert policy.model.config.sampler.num_steps == 2 and policy.planning
    assert (policy.planner.num_candidates, policy.planner.num_world_samples, policy.planner.num_value_samples) == (3, 1, 2)
    assert load_cosmos_policy(ckpt, False, 3, 1, 2).model.config.sampler.num_steps == 5  # the checkpoint's own
    paired = load_cosmos_policy(ckpt, True, 3, 1, 2, sampler_steps=2, planning_checkpoint=ckpt)
    assert paired.planning_model is not None and paired.planning_model.config.sampler.num_steps == 2


def test_model_score_cli_scores_models_on_the_same_episodes(tmp_path):
    import json

    from typer.testing import CliRunner

    from flywheel.cli.app import app
    from flywheel.workspace import Workspace
    from tests.fixtures.checkpoints import make_tiny_checkpoint
    from tests.fixtures.lake import write_synthetic_episodes

    home = tmp_path / "home"
    ws = Workspace(home).ensure()
    write_synthetic_episodes(ws.lake.root, demos=1, successes=2, failures=2, length=40)
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    common = ["--profile", "smoke", "--home", str(home), "--set", "cycle.value_steps_per_episode=2"]
    res = CliRunner().invoke(app, ["model", "score", str(ckpt), "--where", "source <> 'demo'", "--json", *common])
    assert res.exit_code == 0, res.output
    (scores,) = json.loads(res.output.strip().splitlines()[-1]).values()
    assert (scores["episodes"], scores["successes"], scores["samples"]) == (4, 2, 8)
    assert 0 <= scores["value_auc"] <= 1
    res = CliRunner().invoke(app, ["model", "score", str(ckpt), "--where", "source = 'nope'", *common])
    assert res.exit_code != 0 and "no episode matches" in res.output
