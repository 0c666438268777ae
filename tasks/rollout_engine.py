"""Ray-parallel rollout engine.

Each :class:`EnvWorker` actor owns one simulator environment, built once and reused for every episode
it runs, plus the behaviour policy when that policy is privileged or trivial (scripted expert, random)
and must live beside the environment. Episodes are scheduled dynamically over the workers; every
finished episode is handed back to the driver, which writes it to the lake at once (then compacts at
the end), so a crash loses at most the episodes in flight.

Faults: a worker that dies (MuJoCo abort, OOM kill, ``ray.kill``) is restarted by Ray (bounded
``max_restarts``) and the episode it held is retried up to ``max_episode_retries`` times; if it
still fails it is recorded as a failed episode with the error text. An episode that raises inside the
simulator is recorded as failed with its traceback (never dropped). Episode ids are deterministic, so
a retry overwrites, never duplicates.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from flywheel.recordings import EpisodeRequest, to_episode
from sims.demos import EpisodeRecording
from sims.types import Observation, TaskSpec
from storage_schemas import LakeWriter

EnvFactory = Callable[[], object]


@dataclass(frozen=True)
class BehaviourSpec:
    """A policy built inside each worker (privileged expert, noisy expert, random)."""

    kind: str = "expert"  # expert | noisy_expert | random | external (policy batched outside the workers)
    noise_std: float = 0.3
    perturb_prob: float = 0.02
    chunk_size: int = 16  # random policy chunk (the expert is closed-loop, K = 1)

    def __post_init__(self) -> None:
        if self.kind not in ("expert", "noisy_expert", "random", "external"):
            raise ValueError(f"unknown behaviour policy {self.kind!r}; expected expert, noisy_expert, random or external")


class EnvWorker:
    """Owns one environment (and an in-process behaviour policy); runs whole episodes."""

    def __init__(self, env_factory: EnvFactory, behaviour: BehaviourSpec, worker_index: int = 0) -> None:
        from flywheel.compat import set_default_env

        set_default_env()
        self.env = env_factory()
        self.behaviour = behaviour
        self.worker_index = worker_index
        self.pid = os.getpid()
        self.policy = self._make_policy(behaviour)

    def _make_policy(self, b: BehaviourSpec):
        if b.kind == "external":  # the policy lives in the driver or a policy actor (run_batched)
            return None
        if b.kind == "random":
            from sims.random_policy import RandomPolicy

            return RandomPolicy(self.env.action_dim, chunk_size=b.chunk_size)
        from sims.expert.policy import NoiseConfig, ScriptedExpert

        noise = NoiseConfig(action_noise=b.noise_std, perturb_prob=b.perturb_prob) if b.kind == "noisy_expert" else None
        # Noise is keyed on the episode's (task, init state, seed), not on the worker that runs it.
        return ScriptedExpert([self.env], noise=noise, seed=0)

    def ping(self) -> tuple[int, int, int]:
        """(pid, action_dim, proprio_dim)."""
        return self.pid, int(self.env.action_dim), int(self.env.proprio_dim)

    def run_episode(self, req: EpisodeRequest) -> EpisodeRecording:
        from sims.demos import record_episode

        if hasattr(self.policy, "reseed"):
            self.policy.reseed(req.seed)
        if hasattr(self.policy, "seed"):
            self.policy.seed = req.seed
        return record_episode(self.env, self.policy, req.task_id, req.init_state_index, req.seed,
                              image_every=req.image_every)

    # --- step-wise API, for a policy batched across workers (driven by RolloutEngine.run_batched)
    def begin(self, req: EpisodeRequest, needs_images: bool = True) -> Observation | None:
        """Reset for ``req``; returns the first query observation (None if the reset itself failed)."""
        from sims.demos import EpisodeRecorder

        self.recorder = EpisodeRecorder(self.env, req.task_id, req.init_state_index, req.seed, req.image_every,
                                        needs_images=needs_images)
        self.recorder.begin()
        return None if self.recorder.done else self.recorder.observation

    def advance(self, chunk: np.ndarray, policy_name: str) -> tuple[Observation | None, EpisodeRecording | None]:
        """Execute a whole action chunk; returns (next query observation, None) or (None, finished recording)."""
        if self.recorder.execute(chunk):
            return None, self.recorder.finish(policy_name)
        return self.recorder.observation, None

    def abandon(self, policy_name: str, error: str) -> EpisodeRecording:
        """Finish the current episode as failed (the policy could not produce its next chunk)."""
        self.recorder.error, self.recorder.done = error, True
        return self.recorder.finish(policy_name)

    def task_specs(self, task_ids: Sequence[int] | None = None) -> list[TaskSpec]:
        """Specs of ``task_ids`` (default: every task of the suite)."""
        if task_ids is None:
            task_ids = range(int(getattr(self.env, "num_tasks", 1)))
        return [self.env.task_spec(t) for t in task_ids]


@dataclass
class RolloutStats:
    total: int
    done: int = 0
    successes: int = 0
    errors: int = 0
    retries: int = 0
    worker_restarts: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    per_task: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (suite, task) -> [n, success]

    @property
    def success_rate(self) -> float:
        return self.successes / self.done if self.done else 0.0

    def add(self, req: EpisodeRequest, success: bool, steps: int, error: str | None) -> None:
        self.done += 1
        self.successes += int(success)
        self.errors += int(error is not None)
        self.env_steps += steps
        cell = self.per_task.setdefault((req.suite, req.task_id), [0, 0])
        cell[0] += 1
        cell[1] += int(success)


def failed_recording(req: EpisodeRequest, spec: TaskSpec, error: str, action_dim: int, proprio_dim: int) -> EpisodeRecording:
    """An episode that never produced a step (its worker kept dying): kept, as a failure with its error."""
    return EpisodeRecording(task=spec, init_state_index=req.init_state_index, seed=req.seed,
                            actions=np.zeros((0, action_dim), np.float32), proprio=np.zeros((0, proprio_dim), np.float32),
                            object_state=None,
                            image_steps=np.zeros(0, np.int64), images={}, success=False, length=0, wall_time_s=0.0,
                            policy_name=req.policy, error=error)


class RolloutEngine:
    """Schedules episode requests over Ray env workers and streams finished episodes to the lake.

    Args:
        ray: the initialised ``ray`` module (see ``tasks.runtime.init_ray``).
        env_factory: picklable zero-argument callable building one environment in a worker.
        behaviour: the in-worker policy.
        num_workers: environment actors (each reserves one CPU).
        max_episode_retries: retries of an episode whose worker died.
        max_restarts: Ray restarts per worker.
        queue_depth: episodes in flight per worker (2 hides the driver's lake write behind the next episode).
    """

    def __init__(self, ray, env_factory: EnvFactory, behaviour: BehaviourSpec, num_workers: int = 2,
                 max_episode_retries: int = 2, max_restarts: int = 4, worker_cpus: float = 1.0,
                 queue_depth: int = 2) -> None:
        self.ray = ray
        remote_cls = ray.remote(num_cpus=worker_cpus, max_restarts=max_restarts, max_task_retries=0)(EnvWorker)
        self.workers = [remote_cls.remote(env_factory, behaviour, i) for i in range(num_workers)]
        self.max_episode_retries = max_episode_retries
        self.queue_depth = queue_depth
        self._specs: dict[tuple[str, int], TaskSpec] = {}
        self._dims: tuple[int, int] | None = None
        self._alive = [True] * num_workers

    def wait_ready(self, timeout: float = 600) -> list[int]:
        """Block until every worker built its environment; returns their pids."""
        info = self.ray.get([w.ping.remote() for w in self.workers], timeout=timeout)
        self._dims = info[0][1:]
        return [i[0] for i in info]

    def shutdown(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []

    def run(self, requests: Sequence[EpisodeRequest], writer: LakeWriter | None, dataset_id: str, gamma: float = 0.99,
            on_episode: Callable[[EpisodeRequest, EpisodeRecording, RolloutStats], None] | None = None,
            on_submit: Callable[[int, object], None] | None = None,
            keep: Callable[[EpisodeRecording], bool] | None = None) -> RolloutStats:
        """Run every request once (retrying worker deaths), writing each finished episode to ``writer``.

        ``keep`` filters what is written (e.g. only successful expert episodes become demos); every
        episode is still counted in the returned stats.
        """
        from ray.exceptions import RayActorError, RayTaskError

        ray = self.ray
        stats, queue = self.start_run(requests)
        t0 = time.perf_counter()
        pending: dict[object, tuple[int, EpisodeRequest, int]] = {}
        submitted = 0

        def fill() -> None:
            """Keep ``queue_depth`` episodes in flight on every live worker (the next one starts while the
            driver writes the last one to the lake)."""
            nonlocal submitted
            load = [0] * len(self.workers)
            for w, _, _ in pending.values():
                load[w] += 1
            for depth in range(1, self.queue_depth + 1):
                for i, worker in enumerate(self.workers):
                    if not queue:
                        return
                    if self._alive[i] and load[i] < depth:
                        req, attempt = queue.popleft()
                        pending[worker.run_episode.remote(req)] = (i, req, attempt)
                        load[i] += 1
                        submitted += 1
                        if on_submit:
                            on_submit(submitted, worker)

        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            worker_index, req, attempt = pending.pop(ready[0])
            try:
                rec = ray.get(ready[0])
            except (RayActorError, RayTaskError) as exc:
                rec = self.handle_failure(exc, worker_index, req, attempt, stats, queue)
                if rec is None:  # queued for a retry
                    fill()
                    if not pending:
                        raise RuntimeError("every rollout worker died and could not be restarted") from exc
                    continue
            if writer is not None and (keep is None or keep(rec)):
                writer.write_episodes([to_episode(rec, req, dataset_id, gamma)])
            stats.add(req, bool(rec.success) and rec.error is None, rec.length, rec.error)
            if on_episode:
                on_episode(req, rec, stats)
            fill()
        stats.wall_s = time.perf_counter() - t0
        if writer is not None:
            writer.compact()
        return stats

    @staticmethod
    def start_run(requests: Sequence[EpisodeRequest]) -> tuple[RolloutStats, deque[tuple[EpisodeRequest, int]]]:
        """Refuse duplicate requests; a fresh stats record and the (request, attempt) queue of a run."""
        if len({r.episode_id for r in requests}) != len(requests):
            raise ValueError("duplicate episode requests (same iteration, suite, task, init state, seed, policy)")
        return RolloutStats(total=len(requests)), deque((r, 0) for r in requests)

    def handle_failure(self, exc: Exception, worker_index: int, req: EpisodeRequest, attempt: int, stats: RolloutStats,
                       queue: deque[tuple[EpisodeRequest, int]]) -> EpisodeRecording | None:
        """A call on a worker failed: wait out a restart, then queue a retry (returns None) or, once retries are
        used up, return the episode as a failed recording carrying the error."""
        from ray.exceptions import RayActorError

        if isinstance(exc, RayActorError):  # the worker died: wait for Ray to restart it
            stats.worker_restarts += 1
            self._await_restart(worker_index)
        if attempt < self.max_episode_retries:
            stats.retries += 1
            queue.appendleft((req, attempt + 1))
            return None
        if self._dims is None:
            self.wait_ready()
        return failed_recording(req, self._spec(req), f"worker failed {attempt + 1} times: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:500]}", *self._dims)

    def _await_restart(self, worker_index: int, timeout: float = 600) -> bool:
        """Block until Ray restarted the worker (its environment rebuilt); False if it is gone for good."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ray.get(self.workers[worker_index].ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return True
            except ActorUnavailableError:  # restarting: try again shortly
                time.sleep(0.5)
            except (RayActorError, self.ray.exceptions.GetTimeoutError):
                break
        self._alive[worker_index] = False
        return False

    def task_specs(self, task_ids: Sequence[int] | None = None) -> list[TaskSpec]:
        specs = self.ray.get(self.workers[0].task_specs.remote(task_ids), timeout=600)
        for s in specs:
            self._specs[(s.suite, s.task_id)] = s
        return specs

    def _spec(self, req: EpisodeRequest) -> TaskSpec:
        key = (req.suite, req.task_id)
        if key not in self._specs:
            try:
                self._specs[key] = self.ray.get(self.workers[0].task_specs.remote([req.task_id]), timeout=300)[0]
            except Exception:  # noqa: BLE001 - the worker may be dead too: fall back to a bare spec
                self._specs[key] = TaskSpec(req.suite, req.task_id, f"{req.suite} task {req.task_id}", 0, 0)
        return self._specs[key]
