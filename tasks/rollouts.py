"""Rollout and demo-generation units of work (Ray inside), plus their Prefect task wrappers.

The plain functions (``run_rollouts``, ``generate_demos``) are what the CLI calls; the Prefect tasks
wrap them for flows (retries only on Ray start-up, never on a state-changing shard: episode ids are
deterministic, so a re-run overwrites instead).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import pyarrow as pa
from prefect import task

from flywheel.config import FlywheelConfig
from flywheel.recordings import EpisodeRequest
from flywheel.workspace import Workspace
from sims.demos import EpisodeRecording
from sims.factory import make_env
from storage_schemas import LakeWriter, Source
from storage_schemas.stats import compute_suite_stats, wilson_interval
from tasks.registry import ResolvedModel
from tasks.rollout_engine import BehaviourSpec, RolloutEngine, RolloutStats
from tasks.runtime import init_ray

BEHAVIOURS = ("expert", "noisy_expert", "random")
ProgressFn = Callable[[EpisodeRequest, EpisodeRecording, RolloutStats], None]


@dataclass
class RolloutSummary:
    suite: str
    policy: str
    source: str
    iteration: int
    episodes: int
    successes: int
    errors: int
    retries: int
    wall_s: float
    env_steps: int
    written: int
    per_task: dict[int, tuple[int, int]] = field(default_factory=dict)  # task -> (episodes, successes)

    def table(self) -> list[dict]:
        rows = []
        for task_id, (n, s) in sorted(self.per_task.items()):
            lo, hi = wilson_interval(s, n)
            rows.append({"suite": self.suite, "task_id": task_id, "episodes": n, "successes": s,
                         "success_rate": round(s / n, 3) if n else 0.0, "ci95": f"[{lo:.2f}, {hi:.2f}]"})
        return rows


Split = Literal["train", "heldout"]


def init_states_of(split: Split, num_init_states: int, heldout: int) -> list[int]:
    """The init-state indices of a split: the last ``heldout`` of a task's states are held out for evaluation."""
    if heldout >= num_init_states:
        raise ValueError(f"sim.heldout_init_states={heldout} leaves no training init state (the task has "
                         f"{num_init_states}); lower it")
    cut = num_init_states - heldout
    return list(range(cut)) if split == "train" else list(range(cut, num_init_states))


def build_requests(suite: str, task_ids: Sequence[int], episodes_per_task: int, *, iteration: int, source: Source,
                   policy: str, seed: int, image_every: int, init_states: Sequence[int] = tuple(range(50)),
                   ) -> list[EpisodeRequest]:
    """Episode j of a task uses init state ``init_states[j % len(init_states)]`` and seed ``seed + j``."""
    if episodes_per_task < 1:
        raise ValueError(f"episodes per task must be positive, got {episodes_per_task}")
    return [EpisodeRequest(suite, t, init_states[j % len(init_states)], seed + j, iteration, source, policy,
                           image_every=image_every)
            for t in task_ids for j in range(episodes_per_task)]


def existing_episode_ids(ws: Workspace, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the lake already holds (a re-run after a crash runs only the others)."""
    from storage_schemas.views import connect

    if not ids or not ws.lake.parts("episodes"):
        return set()
    con = connect(ws.lake)
    try:
        con.register("wanted", pa.table({"episode_id": list(ids)}))
        return {r[0] for r in con.sql("SELECT episode_id FROM episodes JOIN wanted USING (episode_id)").fetchall()}
    finally:
        con.close()


def _lake_counts(ws: Workspace, ids: Sequence[str]) -> dict[int, tuple[int, int]]:
    """task -> (episodes, successes) of ``ids`` as stored in the lake."""
    from storage_schemas.views import connect

    con = connect(ws.lake)
    try:
        con.register("wanted", pa.table({"episode_id": list(ids)}))
        rows = con.sql("SELECT task_id, count(*), count(*) FILTER (WHERE success) FROM episodes "
                       "JOIN wanted USING (episode_id) GROUP BY task_id").fetchall()
    finally:
        con.close()
    return {int(t): (int(n), int(k)) for t, n, k in rows}


def _engine(cfg: FlywheelConfig, ws: Workspace, suite: str, behaviour: BehaviourSpec, num_workers: int) -> RolloutEngine:
    ray = init_ray(cfg, ws)
    extra = {"object_state": cfg.sim.object_state} if suite.startswith("libero") else {}
    factory = functools.partial(make_env, suite, cfg.sim.image_size, antialias=cfg.sim.antialias,
                                mesh_resolution=cfg.sim.mesh_resolution, **extra)
    engine = RolloutEngine(ray, factory, behaviour, num_workers=num_workers,
                           max_episode_retries=cfg.rollout.max_episode_retries)
    engine.wait_ready()
    return engine


def _summary(stats: RolloutStats, suite: str, policy: str, source: Source, iteration: int, written: int) -> RolloutSummary:
    return RolloutSummary(suite, policy, str(source), iteration, stats.done, stats.successes, stats.errors, stats.retries,
                          stats.wall_s, stats.env_steps, written,
                          {t: (v[0], v[1]) for (_, t), v in stats.per_task.items()})


def _resumed_summary(ws: Workspace, reqs: Sequence[EpisodeRequest], stats: RolloutStats | None, suite: str,
                     policy: str, source: Source, iteration: int) -> RolloutSummary:
    """Counts over every requested episode as the lake holds them (those of an earlier, interrupted run too)."""
    per_task = _lake_counts(ws, [r.episode_id for r in reqs])
    done = sum(n for n, _ in per_task.values())
    ok = sum(k for _, k in per_task.values())
    if stats is None:
        return RolloutSummary(suite, policy, str(source), iteration, done, ok, 0, 0, 0.0, 0, 0, per_task)
    return RolloutSummary(suite, policy, str(source), iteration, done, ok, stats.errors, stats.retries, stats.wall_s,
                          stats.env_steps, stats.done, per_task)


def _task_requests(engine: RolloutEngine, cfg: FlywheelConfig, suite: str, task_ids: Sequence[int] | None,
                   episodes: int, split: Split, **kw) -> list[EpisodeRequest]:
    specs = engine.task_specs(list(task_ids) if task_ids is not None else None)
    states = init_states_of(split, min(s.num_init_states for s in specs) or 1, cfg.sim.heldout_init_states)
    return build_requests(suite, [s.task_id for s in specs], episodes, init_states=states, **kw)


def run_rollouts(cfg: FlywheelConfig, ws: Workspace, suite: str, policy: str, episodes: int,
                 task_ids: Sequence[int] | None = None, iteration: int = 0, source: Source = Source.ROLLOUT,
                 num_workers: int | None = None, on_episode: ProgressFn | None = None,
                 on_start: Callable[[int], None] | None = None, split: Split = "train") -> RolloutSummary:
    """Run ``episodes`` episodes per task of ``suite`` with a behaviour policy and write them all to the lake.

    Episodes start from the ``split``'s init states. Episodes the lake already holds (same deterministic id, e.g.
    from a run that was killed) are not run again; the summary counts them from the lake.
    """
    if policy not in BEHAVIOURS:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(BEHAVIOURS)}")
    behaviour = BehaviourSpec(policy, noise_std=cfg.rollout.expert_noise_std, chunk_size=cfg.model.chunk_size)
    engine = _engine(cfg, ws, suite, behaviour, num_workers or cfg.rollout.num_workers)
    stats = None
    try:
        reqs = _task_requests(engine, cfg, suite, task_ids, episodes, split, iteration=iteration, source=source,
                              policy=policy, seed=cfg.seed + 1000 * iteration, image_every=cfg.demos.image_every)
        have = existing_episode_ids(ws, [r.episode_id for r in reqs])
        todo = [r for r in reqs if r.episode_id not in have]
        if have:
            print(f"{policy} rollouts on {suite}: {len(have)} of {len(reqs)} episodes already in the lake")
        if on_start:
            on_start(len(todo))
        if todo:
            stats = engine.run(todo, LakeWriter(ws.lake), dataset_id=f"{source}-{suite}-it{iteration}",
                               gamma=cfg.model.gamma, on_episode=on_episode)
    finally:
        engine.shutdown()
    return _resumed_summary(ws, reqs, stats, suite, policy, source, iteration)


def generate_demos(cfg: FlywheelConfig, ws: Workspace, suite: str, per_task: int, task_ids: Sequence[int] | None = None,
                   num_workers: int | None = None, on_episode: ProgressFn | None = None,
                   on_start: Callable[[int], None] | None = None) -> RolloutSummary:
    """Scripted-expert demonstrations: every attempt is counted, only successful episodes are written (as demos).
    With ``demos.action_noise``, perturbed-expert demos: the executed actions are noisy, the expert's own are stored
    as the policy's labels."""
    noise = cfg.demos.action_noise
    behaviour = BehaviourSpec("noisy_expert", noise_std=noise, perturb_prob=0.0) if noise else BehaviourSpec("expert")
    engine = _engine(cfg, ws, suite, behaviour, num_workers or cfg.rollout.num_workers)
    written = 0

    def keep(rec: EpisodeRecording) -> bool:
        nonlocal written
        ok = bool(rec.success) and rec.error is None
        written += ok
        return ok

    try:
        reqs = _task_requests(engine, cfg, suite, task_ids, per_task, "train", iteration=0, source=Source.DEMO,
                              policy="noisy_expert" if noise else "expert", seed=cfg.seed,
                              image_every=cfg.demos.image_every)
        if on_start:
            on_start(len(reqs))
        stats = engine.run(reqs, LakeWriter(ws.lake), dataset_id=f"expert-demos-{suite}", gamma=cfg.model.gamma,
                           on_episode=on_episode, keep=keep)
    finally:
        engine.shutdown()
    if written:
        compute_suite_stats(ws.lake, suite)
    return _summary(stats, suite, "expert", Source.DEMO, 0, written)


def load_cosmos_policy(checkpoint: str, planning: bool, num_candidates: int, num_world_samples: int,
                       num_value_samples: int, seed: int = 0, vae_path: str | None = None, t5_path: str | None = None,
                       sampler_steps: int | None = None, planning_checkpoint: str | None = None,
                       world_model_steps: int | None = None, value_steps: int | None = None):
    """Picklable policy factory (runs in the driver or in a policy actor); ``vae_path`` / ``t5_path``: the
    pretrained components found by :func:`tasks.registry.check_components`; ``sampler_steps``: solver steps of
    every sampling chain (``eval.sampler_steps``; None keeps the checkpoint's); ``planning_checkpoint``: a separate
    planning model (world model + value) judging the policy's candidates; ``world_model_steps`` / ``value_steps``:
    solver steps of the planner's judging stages (``eval.world_model_steps``; None: ``sampler_steps``)."""
    import torch

    from cosmos_policy.policy import CosmosPolicy

    torch.set_num_threads(1)  # the env workers own the other cores
    policy = CosmosPolicy.from_checkpoint(checkpoint, seed=seed, vae_path=vae_path, t5_path=t5_path,
                                          planning_checkpoint=planning_checkpoint)
    if sampler_steps is not None:
        for model in filter(None, (policy.model, policy.planning_model)):
            model.config = replace(model.config, sampler=replace(model.config.sampler, num_steps=sampler_steps))
    if planning:
        policy = policy.with_planning(True, num_candidates=num_candidates, num_world_samples=num_world_samples,
                                      num_value_samples=num_value_samples, world_model_steps=world_model_steps,
                                      value_steps=value_steps)
    return policy


def resolve_checkpoint(model: str, cfg: FlywheelConfig, ws: Workspace) -> ResolvedModel:
    """A local checkpoint folder, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (downloaded once into
    ``$FLYWHEEL_HOME/cache/models``) → a local folder and its version label (raises ``RegistryError``)."""
    from tasks.registry import resolve_model
    from tasks.runtime import mlflow_uri

    return resolve_model(model, ws.home / "cache" / "models", mlflow_uri(cfg, ws))


def run_model_rollouts(cfg: FlywheelConfig, ws: Workspace, suite: str, checkpoint: str | ResolvedModel, episodes: int,
                       task_ids: Sequence[int] | None = None, iteration: int = 0, planning: bool = False,
                       source: Source = Source.ROLLOUT, num_workers: int | None = None,
                       placement: str | None = None, on_episode: ProgressFn | None = None,
                       on_start: Callable[[int], None] | None = None, split: Split = "train",
                       engine: RolloutEngine | None = None,
                       planning_model: str | ResolvedModel | None = None) -> RolloutSummary:
    """Roll a Cosmos Policy checkpoint out, batched across env workers; every episode goes to the lake.

    ``checkpoint`` is a local folder, a ``models:/`` URI or an already resolved model; its layout is checked
    against ``suite`` before any episode runs, and episodes record its version label (``NAME/vN`` or
    ``sha-<digest>``), never a filesystem path. With ``planning``, ``planning_model`` (same kinds of reference) is
    a separate model whose world model and value judge the candidates; episodes then record
    ``POLICY+planner:PLANNER`` (:func:`system_label`). Episodes start from the ``split``'s init states (``heldout`` for
    evaluation); those already in the lake are not run again. ``engine``: env workers to reuse (from
    :func:`model_engine`, e.g. for several evaluations in a row; the caller shuts it down), else started here.
    """
    from flywheel.model_setup import component_paths
    from tasks.batched_rollouts import PolicyHandle, run_batched
    from tasks.registry import check_components, check_layout

    resolved = checkpoint if isinstance(checkpoint, ResolvedModel) else resolve_checkpoint(checkpoint, cfg, ws)
    check_object_state(check_layout(resolved.path, suite, chunk_size=cfg.model.chunk_size), cfg, suite)
    components = check_components(resolved.path, **component_paths(cfg))
    judge = None
    if planning_model is not None:
        if not planning:
            raise ValueError("a planning model only acts with planning on (--planning)")
        judge = (planning_model if isinstance(planning_model, ResolvedModel)
                 else resolve_checkpoint(planning_model, cfg, ws))
        check_layout(judge.path, suite, chunk_size=cfg.model.chunk_size)
        check_components(judge.path, **component_paths(cfg))
        if judge.version_label == resolved.version_label:
            judge = None  # the model judges its own candidates
    own_engine = engine is None
    if engine is None:
        engine = model_engine(cfg, ws, suite, num_workers)
    stats, handle = None, None
    try:
        settings = inference_settings(cfg, planning)
        label = system_label(resolved, judge)
        reqs = [replace(r, policy_version=label, planning=planning, settings=settings)
                for r in _task_requests(engine, cfg, suite, task_ids, episodes, split, iteration=iteration,
                                        source=source, policy="model", seed=cfg.seed + 1000 * iteration,
                                        image_every=cfg.model.chunk_size)]
        have = existing_episode_ids(ws, [r.episode_id for r in reqs])
        todo = [r for r in reqs if r.episode_id not in have]
        if have:
            print(f"model rollouts on {suite}: {len(have)} of {len(reqs)} episodes already in the lake")
        if on_start:
            on_start(len(todo))
        if todo:
            factory = functools.partial(load_cosmos_policy, str(resolved.path), planning, cfg.eval.num_candidates,
                                        cfg.eval.world_model_samples, cfg.eval.value_samples, cfg.seed + iteration,
                                        sampler_steps=cfg.eval.sampler_steps,
                                        world_model_steps=cfg.eval.world_model_steps, value_steps=cfg.eval.value_steps,
                                        planning_checkpoint=str(judge.path) if judge else None, **components)
            handle = PolicyHandle(engine.ray, factory, placement or cfg.rollout.policy_placement)
            stats = run_batched(engine, handle, todo, LakeWriter(ws.lake), dataset_id=f"{source}-{suite}-it{iteration}",
                                gamma=cfg.model.gamma, on_episode=on_episode,
                                execute_actions=cfg.model.execute_actions)
    finally:
        if handle is not None:
            handle.close()
        if own_engine:
            engine.shutdown()
    return _resumed_summary(ws, reqs, stats, suite, "model", source, iteration)


def system_label(policy: ResolvedModel, planner: ResolvedModel | None) -> str:
    """What episodes record as ``policy_version``: the policy's label, plus ``+planner:LABEL`` when a separate
    planning model judged its candidates (``cosmos-policy/v1+planner:cosmos-policy/v2``)."""
    if planner is None or planner.version_label == policy.version_label:
        return policy.version_label
    return f"{policy.version_label}+planner:{planner.version_label}"


def inference_settings(cfg: FlywheelConfig, planning: bool) -> str:
    """The settings that change how a model acts, made part of its episodes' ids: actions executed per chunk,
    solver steps and, with planning, candidates / world-model / value samples and the judging stages' solver steps
    (``k16.s5.N4W1V2.j0.0``)."""
    k = cfg.model.execute_actions or cfg.model.chunk_size
    tag = f"k{k}.s{cfg.eval.sampler_steps}"
    if planning:
        tag += (f".N{cfg.eval.num_candidates}W{cfg.eval.world_model_samples}V{cfg.eval.value_samples}"
                f".j{cfg.eval.world_model_steps}.{cfg.eval.value_steps}")
    return tag


def check_object_state(layout, cfg: FlywheelConfig, suite: str) -> None:
    """A model with the privileged object-state frame needs the environments to report LIBERO's goal state
    (raises ``RegistryError`` otherwise)."""
    from sims.scene import GOAL_STATE_DIM
    from tasks.registry import RegistryError

    if not layout.object_state_dim:
        return
    if not suite.startswith("libero") or cfg.sim.object_state != "goal" or layout.object_state_dim != GOAL_STATE_DIM:
        raise RegistryError(f"this model conditions on a {layout.object_state_dim}-float object state: it needs a LIBERO "
                         f"suite with sim.object_state=goal ({GOAL_STATE_DIM} floats); got suite {suite!r}, "
                         f"sim.object_state={cfg.sim.object_state}")


def model_engine(cfg: FlywheelConfig, ws: Workspace, suite: str, num_workers: int | None = None) -> RolloutEngine:
    """Env workers driven by an external (learned) policy; reusable across :func:`run_model_rollouts` calls."""
    return _engine(cfg, ws, suite, BehaviourSpec("external"), num_workers or cfg.rollout.num_workers)


# Prefect tasks: thin wrappers. Ray start-up is the flaky edge; a shard re-run is idempotent by episode id.
rollout_task = task(run_rollouts, name="rollouts", retries=1, retry_delay_seconds=10, persist_result=False)
model_rollout_task = task(run_model_rollouts, name="model-rollouts", retries=1, retry_delay_seconds=10,
                          persist_result=False)
demos_task = task(generate_demos, name="expert-demos", retries=1, retry_delay_seconds=10, persist_result=False)
