"""The cycle's bookkeeping without simulation or training (fast): the iteration counter in MLflow, promotion by the
statistical test, the parent run's metrics/plots/tags, resuming an unfinished iteration. Model versions are
registered with a dummy source: only their numbers and aliases matter here."""

import math

import pytest

from flywheel.config import load_config
from flywheel.workspace import Workspace
from tasks.cycle import DemoResult, EvalResult, ModelRef, RolloutResult, System, promote_stage, role_systems
from tasks.cycle_report import report_stage
from tasks.evaluation import ModeResult, OfflineScores
from tasks.iteration import CHAMPION_PLANNER, Iteration, begin_iteration, champion_uri


@pytest.fixture
def world(home):
    from mlflow.tracking import MlflowClient

    ws = Workspace(home).ensure()
    ws.export_env()
    cfg = load_config("smoke")
    client = MlflowClient(ws.mlflow_uri, registry_uri=ws.mlflow_uri)
    return cfg, ws, client


def _versions(client, n):
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model("cosmos-policy")
    except MlflowException:
        pass
    return [int(client.create_model_version("cosmos-policy", "file:///nowhere").version) for _ in range(n)]


def _ref(v):
    return ModelRef(f"models:/cosmos-policy/{v}", v, None, True, "test", 1.0)


def _eval(roles, rates):
    """rates: role -> (direct successes, planning successes) out of 20 on task 0."""
    ev = EvalResult(roles, seconds=2.0)
    for role, (d, p) in rates.items():
        ev.closed_loop[role] = {"direct": ModeResult(False, 20, d, {0: (20, d)}),
                                "planning": ModeResult(True, 20, p, {0: (20, p)})}
        ev.offline[role] = OfflineScores(0.7, 0.5, 0.6, 8, 4, 16, 0.2, 8, [(0.1 * i % 1, i % 2 == 0) for i in range(16)])
    ev.heldout_episodes = 8
    return ev


def test_iterations_promotion_and_report(world):
    cfg, ws, client = world
    demos = DemoResult("libero_object", "digest-a", 2, 2, 1.0)
    rollouts = RolloutResult(1, 0, 1, 1, 3.0)

    it1 = begin_iteration(cfg, ws)
    assert (it1.number, it1.champion, it1.resumed) == (1, None, False)
    v1, v2 = _versions(client, 2)
    base, cand = _ref(v1), _ref(v2)
    ev = _eval({"candidate": cand.uri, "base": base.uri}, {"candidate": (6, 8), "base": (5, 5)})
    promo = promote_stage(cfg, ws, it1, base, cand, ev)
    assert not promo.decision.promote and promo.champion == base.uri  # 8/20 vs 5/20: p ≈ 0.25 > 0.1
    assert "first champion is the fine-tuned base model" in promo.decision.reason
    summary = report_stage(cfg, ws, it1, demos, base, rollouts, cand, ev, promo)
    parent = client.get_run(it1.parent_run_id)
    assert parent.info.status == "FINISHED"
    m = parent.data.metrics
    assert m["eval/success_rate"] == 0.3 and m["eval/success_rate_planning"] == 0.4
    assert m["eval/success_rate_base"] == 0.25 and m["eval/task_0/success_rate_planning"] == 0.4
    assert m["value/auc"] == 0.7 and m["policy/action_l1"] == 0.2 and m["wm/mse_base"] == 0.5 and math.isclose(m["promote/p_value"], promo.decision.p_value)
    assert m["duration/total_s"] == pytest.approx(1 + 1 + 3 + 1 + 2 + promo.seconds)
    assert parent.data.tags["flywheel.champion"] == base.uri and parent.data.tags["flywheel.demo_digest"] == "digest-a"
    plots = {a.path for a in client.list_artifacts(it1.parent_run_id, "plots")}
    assert plots == {"plots/success_per_task.png", "plots/value_calibration.png", "plots/success_by_iteration.png"}
    children = client.search_runs([it1.experiment_id], f"tags.`mlflow.parentRunId` = '{it1.parent_run_id}'")
    assert {c.data.tags["flywheel.stage"] for c in children} == {"promote"}
    assert summary["champion"] == base.uri and champion_uri(cfg, ws) == base.uri

    # iteration 2 starts from the champion; a significantly better candidate is promoted
    it2 = begin_iteration(cfg, ws)
    assert (it2.number, it2.champion, it2.previous_demo_digest) == (2, base.uri, "digest-a")
    (v3,) = _versions(client, 1)
    cand2 = _ref(v3)
    ev2 = _eval({"candidate": cand2.uri, "base": base.uri, "champion": base.uri},
                {"candidate": (15, 18), "base": (5, 5), "champion": (5, 5)})
    promo2 = promote_stage(cfg, ws, it2, base, cand2, ev2)
    # cycle.planner = "separate" (default): the deployed system is the base policy judged by the refined model
    assert promo2.decision.promote and promo2.champion == base.uri and promo2.champion_planner == cand2.uri
    assert champion_uri(cfg, ws) == base.uri and champion_uri(cfg, ws, CHAMPION_PLANNER) == cand2.uri
    summary2 = report_stage(cfg, ws, it2, demos, base, rollouts, cand2, ev2, promo2)
    assert summary2["champion_planner"] == cand2.uri
    assert client.get_run(it2.parent_run_id).data.tags["flywheel.champion_planner"] == cand2.uri

    # the next iteration sees the pair; with cycle.planner = "same" a promoted candidate replaces both
    it3 = begin_iteration(cfg, ws)
    assert (it3.champion, it3.champion_planner) == (base.uri, cand2.uri)
    same = cfg.model_copy(update={"cycle": cfg.cycle.model_copy(update={"planner": "same"})})
    (v4,) = _versions(client, 1)
    cand3 = _ref(v4)
    ev3 = _eval({"candidate": cand3.uri, "base": base.uri, "champion": cand2.uri},
                {"candidate": (15, 18), "base": (5, 5), "champion": (5, 5)})
    promo3 = promote_stage(same, ws, it3, base, cand3, ev3)
    assert promo3.champion == cand3.uri and promo3.champion_planner is None
    assert champion_uri(cfg, ws) == cand3.uri and champion_uri(cfg, ws, CHAMPION_PLANNER) is None

    # an iteration that never finished (killed) is reopened, not skipped
    resumed = begin_iteration(cfg, ws)
    assert (resumed.number, resumed.parent_run_id, resumed.resumed) == (3, it3.parent_run_id, True)


def test_role_systems_pair_the_base_policy_with_the_refined_planner(world):
    cfg, _, _ = world
    it = Iteration(2, "run", "exp", "models:/m/1", False, None, "models:/m/2")
    systems = role_systems(cfg, it, "models:/m/1", "models:/m/3")
    assert systems["candidate"] == {"direct": System("models:/m/1"), "planning": System("models:/m/1", "models:/m/3")}
    diag = cfg.model_copy(update={"cycle": cfg.cycle.model_copy(update={"refined_policy_diagnostic": True})})
    assert role_systems(diag, it, "models:/m/1", "models:/m/3")["candidate"]["direct"] == System("models:/m/3")
    assert systems["base"]["planning"] == System("models:/m/1")
    assert systems["champion"] == {"direct": System("models:/m/1"), "planning": System("models:/m/1", "models:/m/2")}
    same = cfg.model_copy(update={"cycle": cfg.cycle.model_copy(update={"planner": "same"})})
    assert role_systems(same, it, "models:/m/1", "models:/m/3")["candidate"]["planning"] == System("models:/m/3")
    with pytest.raises(ValueError, match="promote on planning"):
        load_config("smoke", overrides=["cycle.promote_on=direct"])
    with pytest.raises(ValueError, match="eval.planning=true"):
        load_config("smoke", overrides=["eval.planning=false"])
    assert load_config("smoke", overrides=["eval.planning=false", "cycle.planner=same"]).eval.planning is False


def test_stage_cache_keys_follow_inputs_not_timings(world):
    from tasks.cycle import _cache_key

    cfg, ws, _ = world
    it = begin_iteration(cfg, ws)
    key = _cache_key("refine")
    a = key(None, {"cfg": cfg, "ws": ws, "it": it, "model": _ref(1), "rollouts": RolloutResult(2, 1, 1, 0, 5.0)})
    b = key(None, {"cfg": cfg, "ws": ws, "it": it, "model": _ref(1), "rollouts": RolloutResult(2, 1, 1, 0, 99.0)})
    c = key(None, {"cfg": cfg, "ws": ws, "it": it, "model": _ref(2), "rollouts": RolloutResult(2, 1, 1, 0, 5.0)})
    other_cfg = load_config("smoke", overrides=["refine.steps=9"])
    d = key(None, {"cfg": other_cfg, "ws": ws, "it": it, "model": _ref(1), "rollouts": RolloutResult(2, 1, 1, 0, 5.0)})
    assert a == b and len({a, c, d}) == 3 and it.parent_run_id in a
