"""Rollouts of a policy batched across environment workers (a learned model, e.g. Cosmos Policy).

The policy sits either in the driver (``placement="driver"``) or in one Ray policy actor
(``placement="actor"``, e.g. the GPU holder on a cluster). The observations of the workers that wait for an action
chunk are stacked into one ``act`` call; each worker then executes its chunk before it is queried again. By default
the driver queries the policy for whichever workers are ready while the others still step their simulators; with
``lockstep=True`` it waits for every worker first (one batch per round). A policy that accepts per-row keys
(``accepts_episode_keys``) gets one per query, derived from the episode's (task, init state, seed) and the query's
index, so an episode's noise does not depend on which others share its batches. ``benchmarks/bench_rollouts.py``
measures both placements and both schedules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cosmos_policy.planner import row_seed
from flywheel.recordings import EpisodeRequest, to_episode
from sims.demos import EpisodeRecording
from sims.types import Observation, Policy
from storage_schemas import LakeWriter
from tasks.rollout_engine import RolloutEngine, RolloutStats

PolicyFactory = Callable[[], Policy]


class PolicyActor:
    """Holds one policy in a Ray actor; ``act`` is the batched call."""

    def __init__(self, factory: PolicyFactory) -> None:
        self.policy = factory()

    def act(self, observations: Sequence[Observation], instructions: Sequence[str], keys: Sequence[int] | None = None):
        return _act(self.policy, observations, instructions, keys)


def _act(policy: Policy, observations: Sequence[Observation], instructions: Sequence[str],
         keys: Sequence[int] | None):
    if keys is not None and getattr(policy, "accepts_episode_keys", False):
        return policy.act(observations, instructions, keys=keys)  # type: ignore[call-arg]
    return policy.act(observations, instructions)


def query_key(req: EpisodeRequest, query: int) -> int:
    """The noise key of an episode's ``query``-th policy call: (task, init state, seed, query) only."""
    return row_seed(req.task_id, req.init_state_index, req.seed, query)


class PolicyHandle:
    """Uniform ``act`` over a local policy or a policy actor."""

    def __init__(self, ray, factory: PolicyFactory, placement: str = "driver", actor_cpus: float = 0) -> None:
        if placement not in ("driver", "actor"):
            raise ValueError(f"placement must be 'driver' or 'actor', got {placement!r}")
        self.ray, self.placement = ray, placement
        if placement == "driver":
            self._local, self._actor = factory(), None
        else:
            self._local, self._actor = None, ray.remote(num_cpus=actor_cpus)(PolicyActor).remote(factory)
        self.calls = 0
        self.batch_sizes: list[int] = []

    @property
    def requires_images(self) -> bool:
        """Whether query observations need camera images (a remote policy is assumed to need them)."""
        return bool(getattr(self._local, "requires_images", True)) if self._local is not None else True

    def act(self, observations: Sequence[Observation], instructions: Sequence[str], keys: Sequence[int] | None = None):
        self.calls += 1
        self.batch_sizes.append(len(observations))
        if self._local is not None:
            return _act(self._local, observations, instructions, keys)
        return self.ray.get(self._actor.act.remote(list(observations), list(instructions),
                                                   None if keys is None else list(keys)))

    def close(self) -> None:
        if self._actor is not None:
            self.ray.kill(self._actor)


def run_batched(engine: RolloutEngine, policy: PolicyHandle, requests: Sequence[EpisodeRequest], writer: LakeWriter | None,
                dataset_id: str, policy_name: str = "model", gamma: float = 0.99,
                on_episode: Callable[[EpisodeRequest, EpisodeRecording, RolloutStats], None] | None = None,
                execute_actions: int | None = None, lockstep: bool = False) -> RolloutStats:
    """Run ``requests`` on ``engine``'s workers (built with ``BehaviourSpec("external")``), querying ``policy`` batched.

    ``execute_actions``: how many actions of each sampled chunk run before the policy is queried again (None: all).
    ``lockstep``: wait for every worker before each policy call (else: query for the ready ones, see the module).
    """
    from ray.exceptions import RayActorError, RayTaskError

    ray = engine.ray
    stats, queue = engine.start_run(requests)
    t0 = time.perf_counter()
    slots: dict[int, tuple[EpisodeRequest, int]] = {}  # worker -> its episode
    refs: dict[int, tuple[str, object]] = {}  # worker -> outstanding begin/advance call
    queries: dict[int, int] = {}  # worker -> policy calls of its current episode
    instructions: dict[tuple[str, int], str] = {}
    needs_images = policy.requires_images

    def start(i: int) -> None:
        if queue and engine._alive[i]:
            req, attempt = queue.popleft()
            slots[i] = (req, attempt)
            queries[i] = 0
            refs[i] = ("begin", engine.workers[i].begin.remote(req, needs_images))

    def finish(i: int, rec: EpisodeRecording) -> None:
        req, _ = slots.pop(i)
        if writer is not None:
            writer.write_episodes([to_episode(rec, req, dataset_id, gamma)])
        stats.add(req, bool(rec.success) and rec.error is None, rec.length, rec.error)
        if on_episode:
            on_episode(req, rec, stats)
        start(i)

    for i in range(len(engine.workers)):
        start(i)
    while refs:
        waiting: dict[int, Observation] = {}
        for i in list(refs) if lockstep else _ready(ray, refs):
            kind, ref = refs.pop(i)
            req, attempt = slots[i]
            try:
                if kind == "begin":
                    obs, rec = ray.get(ref), None
                    if obs is None:
                        rec = ray.get(engine.workers[i].abandon.remote(policy_name, "reset failed"))
                else:
                    obs, rec = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                rec = engine.handle_failure(exc, i, req, attempt, stats, queue)
                if rec is None:  # queued for a retry
                    slots.pop(i)
                    start(i)
                else:
                    finish(i, rec)
                continue
            if rec is not None:
                finish(i, rec)
            else:
                waiting[i] = obs
        if not waiting:
            continue
        order = sorted(waiting)
        texts = []
        for i in order:
            req = slots[i][0]
            key = (req.suite, req.task_id)
            if key not in instructions:
                instructions[key] = engine._spec(req).instruction
            texts.append(instructions[key])
        try:
            chunks = policy.act([waiting[i] for i in order], texts,
                                keys=[query_key(slots[i][0], queries[i]) for i in order])
        except Exception as exc:  # noqa: BLE001 - a policy failure ends these episodes as failures, recorded
            for i in order:
                finish(i, ray.get(engine.workers[i].abandon.remote(policy_name, f"policy error: {type(exc).__name__}: {exc}")))
            continue
        for i, chunk in zip(order, chunks, strict=True):
            queries[i] += 1
            refs[i] = ("advance", engine.workers[i].advance.remote(chunk[:execute_actions], policy_name))
    stats.wall_s = time.perf_counter() - t0
    if writer is not None:
        writer.compact()
    return stats


def _ready(ray, refs: dict[int, tuple[str, object]]) -> list[int]:
    """Workers whose outstanding call has finished: at least one (blocks until then), all that are done by then."""
    by_ref = {ref: i for i, (_, ref) in refs.items()}
    ray.wait(list(by_ref), num_returns=1)
    done, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
    return sorted(by_ref[r] for r in done)
