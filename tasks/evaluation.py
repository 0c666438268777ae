"""Held-out evaluation: closed-loop success (direct and best-of-N planning), value-head AUC, world-model error,
and the promotion test.

Evaluation episodes start only from the held-out init states (``sim.heldout_init_states``), which no demo or
training rollout uses, and are stored as ``source=eval``, which training never selects. The value / world-model
set is every held-out episode of the iteration: the models' own evaluation episodes plus noisy-expert episodes
on held-out init states (``cycle.heldout_expert_episodes_per_task``), so it holds both outcomes even when the
model rarely succeeds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace
from storage_schemas import LakeWriter, Source
from storage_schemas.schemas import SCHEMA_VERSION
from storage_schemas.stats import wilson_interval
from tasks.registry import ResolvedModel
from tasks.rollouts import RolloutSummary, inference_settings, run_model_rollouts, run_rollouts, system_label


@dataclass
class ModeResult:
    """Closed-loop success of one model in one mode (direct or planning) on the held-out init states."""

    planning: bool
    episodes: int
    successes: int
    per_task: dict[int, tuple[int, int]]

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)


@dataclass
class OfflineScores:
    """Value head and world model on recorded held-out episodes (NaN where undefined, e.g. one outcome only)."""

    value_auc: float
    wm_mse: float
    wm_mse_failures: float
    episodes: int
    successes: int
    samples: int
    # Sampled-chunk action L1 on the clean scripted-expert episodes among them (held-out demos), normalised units.
    action_l1: float = float("nan")
    action_samples: int = 0
    calibration: list[tuple[float, bool]] = field(default_factory=list)  # (predicted value, real success) per sample


def evaluation_rows(summary: RolloutSummary, policy_version: str, planning: bool, iteration: int,
                    inference: str | None = None) -> pa.Table:
    """``evaluations`` rows (one per task) of a held-out evaluation, with Wilson 95% intervals. ``inference``: the
    episodes' inference settings; evaluations of one system under different settings are different rows."""
    rows = []
    now = datetime.now(UTC)
    for task_id, (n, k) in sorted(summary.per_task.items()):
        lo, hi = wilson_interval(k, n)
        key = f"{iteration}|{summary.suite}|{task_id}|{planning}|{policy_version}" + (f"|{inference}" if inference else "")
        rows.append({"evaluation_id": "eval-" + hashlib.sha1(key.encode()).hexdigest()[:20],
                     "schema_version": SCHEMA_VERSION, "dataset_id": f"eval-{summary.suite}-it{iteration}",
                     "suite": summary.suite, "task_id": task_id, "planning": planning,
                     "policy_version": policy_version, "n_episodes": n, "n_success": k,
                     "success_rate": k / n if n else 0.0, "ci_low": lo, "ci_high": hi, "mean_length": None,
                     "created_at": now, "iteration": iteration, "inference": inference})
    return pa.Table.from_pylist(rows)


def evaluate_closed_loop(cfg: FlywheelConfig, ws: Workspace, suite: str, model: ResolvedModel, iteration: int,
                         planning: bool, engine: Any = None, planning_model: ResolvedModel | None = None) -> ModeResult:
    """Roll ``model`` out from the held-out init states (``eval.episodes_per_task`` per task), store the episodes
    as ``source=eval`` and the per-task aggregates in the ``evaluations`` table. ``engine``: env workers to reuse;
    ``planning_model``: a separate model judging the candidates when ``planning``."""
    summary = run_model_rollouts(cfg, ws, suite, model, cfg.eval.episodes_per_task, cfg.sim.tasks, iteration,
                                 planning=planning, source=Source.EVAL, split="heldout", engine=engine,
                                 planning_model=planning_model)
    label = system_label(model, planning_model)
    rows = evaluation_rows(summary, label, planning, iteration, inference_settings(cfg, planning))
    LakeWriter(ws.lake).write_evaluations(rows)
    return ModeResult(planning, summary.episodes, summary.successes, summary.per_task)


def heldout_expert_episodes(cfg: FlywheelConfig, ws: Workspace, suite: str, iteration: int) -> list[RolloutSummary]:
    """Expert episodes on the held-out init states (``source=eval``): noisy ones, the value/world-model test set's
    guaranteed mix of outcomes, and clean ones (held-out demos) for the sampled-chunk action error."""
    out = []
    for policy, n in (("noisy_expert", cfg.cycle.heldout_expert_episodes_per_task),
                      ("expert", cfg.cycle.heldout_demos_per_task)):
        if n:
            out.append(run_rollouts(cfg, ws, suite, policy, n, cfg.sim.tasks, iteration, Source.EVAL, split="heldout"))
    return out


def heldout_episode_ids(ws: Workspace, suite: str, iteration: int) -> list[str]:
    """Every held-out (``source=eval``) episode of ``iteration`` on ``suite`` that did not raise."""
    from flywheel.episodes import select_episodes

    where = f"source = 'eval' AND iteration = {int(iteration)} AND suite = '{suite}'"
    return [str(x) for x in select_episodes(ws.lake, where).column("episode_id").to_pylist()]


def _spread(steps: np.ndarray, k: int) -> np.ndarray:
    if len(steps) <= k:
        return steps
    return steps[np.unique(np.linspace(0, len(steps) - 1, k).round().astype(int))]


def offline_scores(cfg: FlywheelConfig, ws: Workspace, model: ResolvedModel, episode_ids: Sequence[str],
                   seed: int = 0) -> OfflineScores:
    """Value-head ROC AUC (predicted value of the real next state vs the episode's real success), world-model
    future-latent MSE (all episodes, and failures only) and, on the clean scripted-expert episodes among them, the
    sampled-chunk action L1 of ``model`` on recorded episodes. The value and the future are sampled as the planner
    samples them (``eval.value_steps``, ``eval.world_model_steps``), so the AUC describes the judge planning uses."""
    import torch

    from cosmos_policy.checkpoint_io import load_checkpoint
    from cosmos_policy.evaluation import predict_values, roc_auc, sampled_action_l1, world_model_errors
    from cosmos_policy.samples import batch_from_rows, concat_rows, sample_rows, valid_steps
    from cosmos_policy.tokenizer import build_tokenizer
    from flywheel.episodes import cache_latents, select_episodes
    from flywheel.model_setup import component_paths

    nan = float("nan")
    if not episode_ids:
        return OfflineScores(nan, nan, nan, 0, 0, 0)
    net, stats = load_checkpoint(model.path, **component_paths(cfg))
    net.eval()
    lay = net.layout
    ids = ", ".join("'" + i.replace("'", "''") + "'" for i in episode_ids)
    cached = cache_latents(ws.lake, build_tokenizer(net.config.tokenizer), ws.latent_cache, lay.camera_names,
                           where=f"episode_id IN ({ids})", progress=False, latent_layout=lay)
    demos = set(select_episodes(ws.lake, f"episode_id IN ({ids}) AND policy = 'scripted_expert' AND success")
                .column("episode_id").to_pylist())
    parts, outcomes, demo_parts = [], [], []
    for episode_id, ep in zip(cached.episode_ids, cached.latents, strict=True):
        steps = _spread(valid_steps(ep, lay.chunk_size), cfg.cycle.value_steps_per_episode)
        if len(steps):
            parts.append(sample_rows(ep, lay, cfg.model.gamma, steps))
            outcomes.append(bool(ep.success))
            if episode_id in demos:
                demo_parts.append(parts[-1])
    if not parts:
        return OfflineScores(nan, nan, nan, len(cached.latents), 0, 0)
    rows = concat_rows(parts)
    batch = batch_from_rows(rows, ["value"] * len(rows["t"]), lay, stats)
    with torch.no_grad():
        values = predict_values(net, batch, seed=seed, num_steps=cfg.eval.value_steps).numpy()
        errors = world_model_errors(net, batch, seed=seed, num_steps=cfg.eval.world_model_steps).numpy()
        action_l1, n_action = nan, 0
        if demo_parts:
            demo_rows = concat_rows(demo_parts)
            n_action = len(demo_rows["t"])
            demo_batch = batch_from_rows(demo_rows, ["policy"] * n_action, lay, stats)
            action_l1 = float(sampled_action_l1(net, demo_batch, seed=seed).mean())
    success = np.asarray(rows["success"], dtype=bool)
    return OfflineScores(
        value_auc=roc_auc(values, success), wm_mse=float(errors.mean()),
        wm_mse_failures=float(errors[~success].mean()) if (~success).any() else nan,
        episodes=len(outcomes), successes=int(sum(outcomes)), samples=len(values), action_l1=action_l1,
        action_samples=n_action, calibration=[(float(v), bool(s)) for v, s in zip(values, success, strict=True)])


@dataclass
class Decision:
    """The promotion test's outcome (recorded in MLflow and the cycle summary)."""

    promote: bool
    p_value: float
    reason: str
    candidate: tuple[int, int]  # (successes, episodes)
    champion: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def promotion_test(candidate: tuple[int, int], champion: tuple[int, int], alpha: float) -> Decision:
    """One-sided Fisher exact test that the candidate's held-out success rate exceeds the champion's.

    ``candidate`` / ``champion`` are (successes, episodes) on the same held-out init states and seeds. The
    candidate is promoted only if p < ``alpha``: a higher raw rate alone never promotes.
    """
    from scipy.stats import fisher_exact

    (ks, ns), (kc, nc) = candidate, champion
    if ns <= 0 or nc <= 0:
        raise ValueError(f"promotion needs evaluated episodes on both sides, got {ns} and {nc}")
    _, p = fisher_exact([[ks, ns - ks], [kc, nc - kc]], alternative="greater")
    p = float(p) if not math.isnan(p) else 1.0
    rates = f"{ks}/{ns} vs {kc}/{nc}"
    if p < alpha:
        return Decision(True, p, f"candidate beats champion ({rates}, one-sided Fisher p={p:.3g} < {alpha})",
                        candidate, champion)
    return Decision(False, p, f"not significantly better ({rates}, one-sided Fisher p={p:.3g} >= {alpha})",
                    candidate, champion)


def evaluate_model(cfg: FlywheelConfig, ws: Workspace, model: str, iteration: int = 0,
                   planning_model: str | None = None, modes: Sequence[str] | None = None) -> dict[str, ModeResult]:
    """Ad-hoc held-out evaluation of any model (folder or ``models:/`` URI): direct and, with ``eval.planning``,
    best-of-N planning (judged by ``planning_model`` when given); episodes as ``source=eval``, aggregates in
    ``evaluations``. ``modes``: a subset of ``("direct", "planning")`` (default: both, or direct alone without
    ``eval.planning``). ``iteration`` picks the held-out seeds: the same iteration replays a cycle's episodes."""
    from tasks.rollouts import model_engine, resolve_checkpoint

    wanted = tuple(modes) if modes is not None else (("direct", "planning") if cfg.eval.planning else ("direct",))
    unknown = sorted(set(wanted) - {"direct", "planning"})
    if unknown or not wanted:
        raise ValueError(f"modes must be a non-empty subset of ('direct', 'planning'), got {list(wanted)}")
    if "planning" in wanted and not cfg.eval.planning:
        raise ValueError("planning mode needs eval.planning=true")
    if planning_model and "planning" not in wanted:
        raise ValueError("a planning model needs the planning mode (eval.planning=true)")
    resolved = resolve_checkpoint(model, cfg, ws)
    judge = resolve_checkpoint(planning_model, cfg, ws) if planning_model else None
    run = {m: m == "planning" for m in ("direct", "planning") if m in wanted}
    engine = model_engine(cfg, ws, cfg.sim.suites[0])
    try:
        return {mode: evaluate_closed_loop(cfg, ws, cfg.sim.suites[0], resolved, iteration, planning, engine,
                                           judge if planning else None)
                for mode, planning in run.items()}
    finally:
        engine.shutdown()


# Ray start-up is the transient edge; evaluation episodes are idempotent by id.
evaluate_model_task = task(evaluate_model, name="evaluate-model", retries=1, retry_delay_seconds=10,
                           persist_result=False)
