"""The nightly cycle's stages as plain functions (testable without Prefect) and their Prefect tasks.

Stage order (``flows/cycle.py``): demos → fine-tune (first iteration or new demos) → rollouts → 90/10 refine →
held-out evaluation (direct + best-of-N planning, value AUC, world-model error) → promotion. Each stage reads its
inputs from the lake / MLflow, writes its outputs back, and records a child run under the iteration's parent run.

Resuming: the Prefect tasks persist their results and are cached on (stage, iteration run, config digest, stage
inputs), so a re-run of a crashed cycle skips finished stages; inside a stage, episodes already in the lake are not
run again and a finished training is returned from MLflow.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prefect import task

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace
from storage_schemas import Source
from tasks.evaluation import Decision, ModeResult, OfflineScores
from tasks.iteration import CycleError, Iteration, cycle_suite


def config_digest(cfg: FlywheelConfig) -> str:
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()[:12]


def _child(it: Iteration, stage: str):
    from tasks.tracking import stage_run

    return stage_run(it.experiment_id, f"{it.key}/{stage}", f"it{it.number}-{stage}",
                     {"flywheel.stage": stage, "flywheel.iteration": str(it.number)}, it.parent_run_id)


def _log_duration(stage: str, t0: float) -> float:
    import mlflow

    seconds = time.perf_counter() - t0
    mlflow.log_metric("duration_s", seconds)
    return seconds


@dataclass
class DemoResult:
    suite: str
    digest: str  # over the ids of the suite's demonstrations
    episodes: int
    generated: int
    seconds: float = 0.0


@dataclass
class ModelRef:
    """A registered model version a stage produced or used."""

    uri: str  # models:/NAME/VERSION
    version: int
    run_id: str | None
    trained: bool  # False when an earlier, identical training was reused
    reason: str
    seconds: float = 0.0
    steps: int = 0  # optimiser steps of the training (0: not trained in this cycle)


@dataclass
class RolloutResult:
    model_episodes: int
    model_successes: int
    expert_episodes: int
    expert_successes: int
    seconds: float = 0.0


@dataclass(frozen=True)
class System:
    """What acts in one evaluation: a policy and, when planning, the model judging its candidates."""

    policy: str  # models:/NAME/VERSION
    planner: str | None = None  # None: the policy judges its own candidates


def role_systems(cfg: FlywheelConfig, it: Iteration, base: str, candidate: str) -> dict[str, dict[str, System]]:
    """role → mode → system evaluated. ``base`` acts and plans alone. ``candidate`` is the system the cycle would
    deploy: with ``cycle.planner="separate"`` the base policy, judged by the refined model when planning (its direct
    mode is then the base's own; ``cycle.refined_policy_diagnostic`` evaluates the refined model's own sampling
    there instead, a diagnostic that is not deployed), else the refined model alone. ``champion``: the deployed pair
    at the start of the iteration."""
    modes = ("direct", "planning") if cfg.eval.planning else ("direct",)
    separate = cfg.cycle.planner == "separate"
    own = System(base) if separate and not cfg.cycle.refined_policy_diagnostic else System(candidate)
    out = {"base": {m: System(base) for m in modes},
           "candidate": {m: System(base, candidate) if m == "planning" and separate else own for m in modes}}
    if it.champion is not None:
        out["champion"] = {m: System(it.champion, it.champion_planner if m == "planning" else None) for m in modes}
    return out


@dataclass
class EvalResult:
    """Closed-loop and offline results of every evaluated model (role → ...), on the same held-out set."""

    roles: dict[str, str]  # role (candidate / base / champion) → URI of the model whose value / world model is scored
    systems: dict[str, dict[str, System]] = field(default_factory=dict)  # role → mode → what acted
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # role → mode → policy_version in the lake
    closed_loop: dict[str, dict[str, ModeResult]] = field(default_factory=dict)  # role → mode → result
    offline: dict[str, OfflineScores] = field(default_factory=dict)  # role → scores
    heldout_episodes: int = 0
    seconds: float = 0.0


@dataclass
class PromoteResult:
    decision: Decision
    champion: str  # models:/NAME/VERSION after the decision
    mode: str
    seconds: float = 0.0
    champion_planner: str | None = None  # its planning model after the decision (None: it judges itself)


def _demo_ids(ws: Workspace, suite: str) -> list[str]:
    from flywheel.episodes import select_episodes

    if not ws.lake.parts("episodes"):
        return []
    table = select_episodes(ws.lake, f"source = 'demo' AND suite = '{suite}'")
    return sorted(str(x) for x in table.column("episode_id").to_pylist())


def _demo_counts(ws: Workspace, suite: str) -> dict[int, int]:
    from storage_schemas.views import connect

    if not ws.lake.parts("episodes"):
        return {}
    con = connect(ws.lake)
    try:
        rows = con.sql(f"SELECT task_id, count(*) FROM episodes WHERE source = 'demo' AND suite = '{suite}' "
                       "GROUP BY task_id").fetchall()
    finally:
        con.close()
    return {int(t): int(n) for t, n in rows}


def demos_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration) -> DemoResult:
    """Generate scripted-expert demos for tasks that have fewer than ``demos.per_task`` (ingested demos count)."""
    from tasks.rollouts import generate_demos

    t0 = time.perf_counter()
    suite = cycle_suite(cfg)
    with _child(it, "demos"):
        counts = _demo_counts(ws, suite)
        missing = ([t for t in cfg.sim.tasks if counts.get(t, 0) < cfg.demos.per_task] if cfg.sim.tasks is not None
                   else (None if not counts else []))
        generated = 0
        if missing is None or missing:
            summary = generate_demos(cfg, ws, suite, cfg.demos.per_task, missing)
            generated = summary.written
        ids = _demo_ids(ws, suite)
        if not ids:
            raise CycleError(f"no demonstrations of {suite} in the lake at {ws.lake.root}, and the expert wrote none")
        import mlflow

        mlflow.log_metrics({"demo_episodes": len(ids), "generated": generated})
        seconds = _log_duration("demos", t0)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return DemoResult(suite, digest, len(ids), generated, seconds)


def _model_ref(result: Any, reason: str, seconds: float) -> ModelRef:
    return ModelRef(result.model_uri, result.version, result.run_id, not result.already_done, reason, seconds,
                    result.steps)


def finetune_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, demos: DemoResult) -> ModelRef:
    """Fine-tune the base model on the demos on the first iteration or when the demos changed; else start from
    the champion."""
    from tasks.training import train_model

    t0 = time.perf_counter()
    if it.champion is not None and demos.digest == it.previous_demo_digest:
        return ModelRef(it.champion, int(it.champion.rsplit("/", 1)[1]), None, False,
                        "demos unchanged: start from the champion")
    reason = "first iteration" if it.champion is None else "demos changed since the last iteration"
    result = train_model(cfg, ws, demos.suite, mix="base", parent_run_id=it.parent_run_id, progress=False)
    return _model_ref(result, f"fine-tuned on {demos.episodes} demos ({reason})", time.perf_counter() - t0)


def rollouts_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, model: ModelRef) -> RolloutResult:
    """Ray-parallel rollouts of the current model on the training init states, plus the noisy-expert share."""
    import mlflow

    from tasks.rollouts import resolve_checkpoint, run_model_rollouts, run_rollouts

    t0 = time.perf_counter()
    suite = cycle_suite(cfg)
    n = cfg.rollout.episodes_per_task
    n_expert = round(n * cfg.rollout.expert_noise_share)
    with _child(it, "rollouts"):
        mlflow.set_tag("model", model.uri)
        m_eps = m_ok = e_eps = e_ok = 0
        if n - n_expert:
            s = run_model_rollouts(cfg, ws, suite, resolve_checkpoint(model.uri, cfg, ws), n - n_expert, cfg.sim.tasks,
                                   it.number, source=Source.ROLLOUT)
            m_eps, m_ok = s.episodes, s.successes
        if n_expert:
            s = run_rollouts(cfg, ws, suite, "noisy_expert", n_expert, cfg.sim.tasks, it.number, Source.ROLLOUT)
            e_eps, e_ok = s.episodes, s.successes
        mlflow.log_metrics({"model_episodes": m_eps, "model_successes": m_ok, "expert_episodes": e_eps,
                            "expert_successes": e_ok})
        seconds = _log_duration("rollouts", t0)
    return RolloutResult(m_eps, m_ok, e_eps, e_ok, seconds)


def refine_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, model: ModelRef, rollouts: RolloutResult) -> ModelRef:
    """Refine ``model`` with the 90/10 mix on the rollouts of the last ``cycle.rollout_window`` iterations."""
    from tasks.training import train_model

    t0 = time.perf_counter()
    window = (max(1, it.number - cfg.cycle.rollout_window + 1), it.number)
    result = train_model(cfg, ws, cycle_suite(cfg), init=model.uri, mix="refine", rollout_iterations=window,
                         parent_run_id=it.parent_run_id, progress=False)
    return _model_ref(result, f"refined {model.uri} on rollouts of iterations {window[0]}-{window[1]}",
                      time.perf_counter() - t0)


def evaluate_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, base: ModelRef, candidate: ModelRef) -> EvalResult:
    """Held-out closed-loop success of the systems of :func:`role_systems` (direct, and planning when
    ``eval.planning``), each distinct system once; then value AUC and world-model error of each role's judging model
    (base, refined, the champion's planner) on the same held-out episodes."""
    import mlflow

    from tasks.evaluation import evaluate_closed_loop, heldout_episode_ids, heldout_expert_episodes, offline_scores
    from tasks.rollouts import model_engine, resolve_checkpoint, system_label

    t0 = time.perf_counter()
    suite = cycle_suite(cfg)
    systems = role_systems(cfg, it, base.uri, candidate.uri)
    roles = {"candidate": candidate.uri, "base": base.uri}
    if it.champion is not None:
        roles["champion"] = it.champion_planner or it.champion
    result = EvalResult(roles, systems)
    uris = set(roles.values()) | {u for modes in systems.values() for sy in modes.values()
                                  for u in (sy.policy, sy.planner) if u}
    with _child(it, "evaluate"):
        heldout_expert_episodes(cfg, ws, suite, it.number)
        resolved = {uri: resolve_checkpoint(uri, cfg, ws) for uri in sorted(uris)}
        done: dict[tuple[System, str], ModeResult] = {}

        def judge(sy: System):  # role_systems gives a planner to planning modes only
            return resolved[sy.planner] if sy.planner else None

        engine = model_engine(cfg, ws, suite)  # one set of env workers for every system and mode
        try:
            for modes in systems.values():
                for mode, sy in modes.items():
                    if (sy, mode) not in done:
                        done[(sy, mode)] = evaluate_closed_loop(cfg, ws, suite, resolved[sy.policy], it.number,
                                                                mode == "planning", engine, judge(sy))
        finally:
            engine.shutdown()
        ids = heldout_episode_ids(ws, suite, it.number)
        scores = {uri: offline_scores(cfg, ws, resolved[uri], ids, seed=cfg.seed + it.number)
                  for uri in sorted(set(roles.values()))}
        result.closed_loop = {role: {m: done[(sy, m)] for m, sy in modes.items()} for role, modes in systems.items()}
        result.labels = {role: {m: system_label(resolved[sy.policy], judge(sy)) for m, sy in modes.items()}
                         for role, modes in systems.items()}
        result.offline = {role: scores[uri] for role, uri in roles.items()}
        result.heldout_episodes = len(ids)
        for role in roles:
            for mode, r in result.closed_loop[role].items():
                mlflow.log_metric(f"{role}/success_rate_{mode}", r.rate)
            s = result.offline[role]
            mlflow.log_metrics({f"{role}/value_auc": s.value_auc, f"{role}/wm_mse": s.wm_mse})
        mlflow.set_tags({f"system/{role}/{m}": label for role, modes in result.labels.items()
                         for m, label in modes.items()})
        result.seconds = _log_duration("evaluate", t0)
    return result


def promote_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, base: ModelRef, candidate: ModelRef,
                  evaluation: EvalResult) -> PromoteResult:
    """Deploy the candidate system only if it beats the incumbent (the champion system, or before the first
    promotion the base model alone) by a one-sided Fisher exact test at ``cycle.promote_alpha``.

    With ``cycle.planner="separate"`` the candidate system is (base policy, refined planner): promotion points
    ``champion`` at the base and ``champion-planner`` at the refined model. With ``"same"`` ``champion`` points at
    the refined model and ``champion-planner`` is removed."""
    import mlflow

    from tasks.evaluation import promotion_test
    from tasks.iteration import CHAMPION, CHAMPION_PLANNER
    from tasks.registry import delete_alias, set_alias
    from tasks.runtime import mlflow_uri

    t0 = time.perf_counter()
    mode = cfg.cycle.promote_on if cfg.eval.planning else "direct"
    separate = cfg.cycle.planner == "separate"
    incumbent_role = "champion" if it.champion is not None else "base"
    cand = evaluation.closed_loop["candidate"][mode]
    inc = evaluation.closed_loop[incumbent_role][mode]
    decision = promotion_test((cand.successes, cand.episodes), (inc.successes, inc.episodes), cfg.cycle.promote_alpha)
    name = cfg.mlflow.model_name
    with _child(it, "promote"):
        uri = mlflow_uri(cfg, ws)
        planner = it.champion_planner
        if decision.promote:
            policy = base if separate else candidate
            set_alias(name, CHAMPION, policy.version, uri)
            champion, planner = policy.uri, candidate.uri if separate else None
            if separate:
                set_alias(name, CHAMPION_PLANNER, candidate.version, uri)
            else:
                delete_alias(name, CHAMPION_PLANNER, uri)
        elif it.champion is None:
            set_alias(name, CHAMPION, base.version, uri)
            champion = base.uri
            decision.reason = f"first champion is the fine-tuned base model: candidate {decision.reason}"
        else:
            champion = it.champion
            decision.reason = f"champion stays: candidate {decision.reason}"
        mlflow.log_metrics({"p_value": decision.p_value, "promoted": float(decision.promote)})
        mlflow.set_tags({"decision": decision.reason, "champion": champion, "champion_planner": planner or "",
                         "mode": mode})
        seconds = _log_duration("promote", t0)
    return PromoteResult(decision, champion, mode, seconds, planner)


def _token(value: Any) -> Any:
    """What identifies a stage input in a cache key (timings excluded)."""
    if is_dataclass(value):
        return {k: v for k, v in asdict(value).items() if k != "seconds"}
    return value


def _cache_key(stage: str):
    """Prefect cache key: the stage, the iteration's parent run, the config digest and the stage's other inputs."""
    def key(_context: Any, params: dict[str, Any]) -> str:
        others = {k: _token(v) for k, v in params.items() if k not in ("cfg", "ws", "it")}
        inputs = hashlib.sha256(json.dumps(others, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{stage}-{params['it'].parent_run_id}-{config_digest(params['cfg'])}-{inputs}"
    return key


def stage_tasks(ws: Workspace) -> SimpleNamespace:
    """The stages as Prefect tasks whose results persist under ``$FLYWHEEL_HOME/prefect-results``. Retries only
    where a failure can be transient (Ray start-up in rollouts/evaluation; episodes are idempotent by id); a failed
    training resumes from its checkpoint when the cycle is run again."""
    storage = Path(ws.home) / "prefect-results"
    storage.mkdir(parents=True, exist_ok=True)

    def make(fn, stage: str, retries: int = 0):
        return task(fn, name=stage, retries=retries, retry_delay_seconds=10, persist_result=True,
                    result_storage=storage, cache_key_fn=_cache_key(stage))

    return SimpleNamespace(demos=make(demos_stage, "demos", 1), finetune=make(finetune_stage, "finetune"),
                           rollouts=make(rollouts_stage, "rollouts", 1), refine=make(refine_stage, "refine"),
                           evaluate=make(evaluate_stage, "evaluate", 1), promote=make(promote_stage, "promote"))
