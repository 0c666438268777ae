"""Record one episode of a policy (typically the scripted expert) in an environment.

Pure simulation: returns an :class:`EpisodeRecording`; writing it anywhere is the caller's job.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sims.types import Env, Observation, Policy, TaskSpec


@dataclass
class EpisodeRecording:
    """One recorded episode.

    Rows are executed steps: row ``t`` in ``[0, T)`` is the observation *before* action ``t``.

    Attributes:
        task: the task's :class:`TaskSpec`.
        init_state_index / seed: what ``reset`` got.
        actions: ``(T, A)`` float32 executed actions (an action whose ``env.step`` raised is not executed).
        proprio: ``(T, P)`` float32, the observation *before* each action (always ``len(actions)`` rows).
        object_state: ``(T, S)`` float32 privileged object state before each action (None if absent).
        image_steps: ``(N,)`` int64 increasing rows that have images, all ``< T``: every ``image_every``-th
            step ``t < T`` plus the last row ``T - 1`` (the observation before the final action).
        images: camera -> ``(N, H, W, 3)`` uint8, aligned with ``image_steps``.
        success: the task's goal predicate held at the end; length: T; wall_time_s: seconds.
        policy_name: who acted; error: a message if the episode crashed (then ``success`` is False).
        clean_actions: ``(T, A)`` the behaviour policy's un-noised actions when it exposes them
            (``last_clean_actions``), else None.
        final_proprio: ``(P,)`` the observation after the last executed action.
        final_images: camera -> ``(H, W, 3)`` uint8 of the observation after the last action (empty when
            images are off or the episode crashed); it has no row.
    """

    task: TaskSpec
    init_state_index: int
    seed: int
    actions: np.ndarray
    proprio: np.ndarray
    object_state: np.ndarray | None
    image_steps: np.ndarray
    images: dict[str, np.ndarray]
    success: bool
    length: int
    wall_time_s: float
    policy_name: str
    error: str | None = None
    clean_actions: np.ndarray | None = None
    final_proprio: np.ndarray | None = None
    info: dict[str, object] = field(default_factory=dict)
    final_images: dict[str, np.ndarray] = field(default_factory=dict)


def _policy_name(policy: object) -> str:
    return str(getattr(policy, "name", None) or type(policy).__name__)


class EpisodeRecorder:
    """Runs and records one episode chunk by chunk, for callers that query the policy themselves.

    ``record_episode`` drives it with a local policy; the rollout engine drives it from a policy that
    is batched across many environments. Usage::

        rec = EpisodeRecorder(env, task_id, init, seed, image_every=4, needs_images=True)
        obs = rec.begin()
        while not rec.done:
            rec.execute(policy.act([rec.observation], [rec.instruction])[0])
        recording = rec.finish(policy_name)

    Cameras are rendered only where needed: at image rows (every ``image_every``-th row, the last row
    ``T - 1`` and the final observation after the last action; ``image_every=0`` records no images) and,
    when ``needs_images``, at every chunk boundary (the observation the policy is queried with).

    Whether a row is the last is only known after its action has run (first success). Environments
    that can snapshot their state (``save_state() -> token`` and ``render_state(token) -> images``,
    e.g. :class:`sims.libero_env.LiberoEnv`) keep a cheap state token per step and render the last row
    afterwards; for other environments every row is rendered while images are on (correct, slower).
    The step limit (``TaskSpec.max_steps``) is known ahead, so that last row is rendered directly.
    An exception inside the simulator is recorded (``error``), never raised.
    """

    def __init__(self, env: Env, task_id: int, init_state_index: int, seed: int, image_every: int = 4, *,
                 needs_images: bool = True, instruction: str | None = None) -> None:
        if image_every < 0:
            raise ValueError(f"image_every must be >= 0, got {image_every}")
        self.env, self.task_id, self.init_state_index, self.seed = env, task_id, init_state_index, seed
        self.image_every, self.needs_images = image_every, needs_images
        self.spec = env.task_spec(task_id)
        self.instruction = instruction if instruction is not None else self.spec.instruction
        self._can_rewind = callable(getattr(env, "save_state", None)) and callable(getattr(env, "render_state", None))
        self._t0 = time.perf_counter()
        self.actions: list[np.ndarray] = []
        self.clean: list[np.ndarray] = []
        self.proprio: list[np.ndarray] = []
        self.objstate: list[np.ndarray] = []
        self.steps: list[int] = []
        self.frames: dict[str, list[np.ndarray]] = {c: [] for c in env.camera_names}
        self.final_images: dict[str, np.ndarray] = {}
        self.success, self.error, self.done = False, None, False
        self.observation: Observation | None = None
        self._last_row_images: Mapping[str, np.ndarray] | None = None
        self._token: object = None
        self._sdim: int | None = None
        self._t = 0

    def _keep_images(self, t: int, images: Mapping[str, np.ndarray]) -> None:
        self.steps.append(t)
        for cam in self.env.camera_names:
            self.frames[cam].append(np.asarray(images[cam], dtype=np.uint8))

    def _is_image_row(self, t: int) -> bool:
        return bool(self.image_every) and (t % self.image_every == 0 or t == self.spec.max_steps - 1)

    def _fail(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        self.success, self.done, self.final_images = False, True, {}

    def _prepare_row(self, query: bool) -> None:
        """Render/keep the current row's images as needed (``query``: the policy is about to see it)."""
        obs, env, t = self.observation, self.env, self._t
        want = self._is_image_row(t) or (bool(self.image_every) and not self._can_rewind)
        if (want or (self.needs_images and query)) and not obs.images:
            obs = self.observation = Observation(env.render(), obs.proprio, obs.object_state)
        if self._is_image_row(t):
            self._keep_images(t, obs.images)
        self._last_row_images = obs.images if obs.images else None
        self._token = env.save_state() if self.image_every and self._can_rewind and self._last_row_images is None else None

    def begin(self) -> Observation | None:
        """Reset the environment; returns the first observation (with images when ``needs_images``)."""
        try:
            self.observation = self.env.reset(self.task_id, self.init_state_index, self.seed)
            obj = self.observation.object_state
            self._sdim = None if obj is None else int(np.asarray(obj).size)
            self._prepare_row(query=True)
        except Exception as exc:  # noqa: BLE001 - recorded, not raised
            self._fail(exc)
        return self.observation

    def execute(self, chunk: np.ndarray, clean_chunk: np.ndarray | None = None) -> bool:
        """Execute a whole ``(K, A)`` action chunk (stopping early when the episode ends); returns ``done``.

        After it, when the episode goes on, ``observation`` is the next query observation (with images
        when ``needs_images``). ``clean_chunk`` are the behaviour policy's un-noised actions, if any.
        """
        chunk = np.asarray(chunk, dtype=np.float32)
        try:
            for k in range(len(chunk)):
                if self.done:
                    break
                if k > 0:
                    self._prepare_row(query=False)
                last_in_chunk = k == len(chunk) - 1
                render = (self._is_image_row(self._t + 1) or (bool(self.image_every) and not self._can_rewind)
                          or (self.needs_images and last_in_chunk))
                result = self.env.step(chunk[k], render=render)
                # action t executed: append row t (so a raising step leaves every array aligned)
                obs = self.observation
                self.actions.append(chunk[k])
                if clean_chunk is not None:
                    self.clean.append(np.asarray(clean_chunk[k], dtype=np.float32))
                self.proprio.append(np.asarray(obs.proprio, dtype=np.float32))
                if obs.object_state is not None:
                    self.objstate.append(np.asarray(obs.object_state, dtype=np.float32))
                self.observation, self.done, self.success = result.observation, result.done, result.success
                self._t += 1
            if self.done:
                self._close_images()
            else:
                self._prepare_row(query=True)
        except Exception as exc:  # noqa: BLE001 - one crashed episode must not kill a shard
            self._fail(exc)
        return self.done

    def _close_images(self) -> None:
        if not self.image_every:
            return
        obs, t = self.observation, self._t
        self.final_images = {c: np.asarray(v, np.uint8) for c, v in (obs.images or self.env.render()).items()}
        if t > 0 and (not self.steps or self.steps[-1] != t - 1):  # the last row T - 1
            imgs = self._last_row_images if self._last_row_images is not None else self.env.render_state(self._token)  # type: ignore[attr-defined]
            self._keep_images(t - 1, imgs)

    def finish(self, policy_name: str) -> EpisodeRecording:
        n = len(self.actions)
        keep = [i for i, s in enumerate(self.steps) if s < n]  # a crash can leave the image of an unexecuted row
        adim, pdim, sdim = self.env.action_dim, self.env.proprio_dim, self._sdim
        obs = self.observation
        return EpisodeRecording(
            task=self.spec,
            init_state_index=self.init_state_index,
            seed=self.seed,
            actions=np.stack(self.actions) if self.actions else np.zeros((0, adim), np.float32),
            proprio=np.stack(self.proprio) if self.proprio else np.zeros((0, pdim), np.float32),
            object_state=None if sdim is None or len(self.objstate) != n
            else np.asarray(self.objstate, np.float32).reshape(n, sdim),
            image_steps=np.asarray([self.steps[i] for i in keep], dtype=np.int64),
            images={c: np.stack([f[i] for i in keep]) if keep else np.zeros((0, 0, 0, 3), np.uint8)
                    for c, f in self.frames.items()},
            success=bool(self.success) and self.error is None,
            length=n,
            wall_time_s=time.perf_counter() - self._t0,
            policy_name=policy_name,
            error=self.error,
            clean_actions=np.stack(self.clean) if self.clean and len(self.clean) == n else None,
            final_proprio=None if obs is None else np.asarray(obs.proprio, dtype=np.float32),
            final_images=self.final_images,
        )


def record_episode(
    env: Env,
    policy: Policy,
    task_id: int,
    init_state_index: int,
    seed: int,
    image_every: int = 4,
    *,
    instruction: str | None = None,
) -> EpisodeRecording:
    """Run one episode of ``policy`` in ``env`` and record it; ends at first success or the step limit.

    See :class:`EpisodeRecorder` for when cameras are rendered; policies that need no images declare
    ``requires_images = False``.

    Args:
        env: any :class:`sims.types.Env`.
        policy: any :class:`sims.types.Policy`; it gets batches of one observation.
        image_every: image stride in steps (0 disables images).
        instruction: overrides the task's instruction given to the policy.
    """
    rec = EpisodeRecorder(env, task_id, init_state_index, seed, image_every,
                          needs_images=bool(getattr(policy, "requires_images", True)), instruction=instruction)
    rec.begin()
    while not rec.done:
        try:
            chunk = np.asarray(policy.act([rec.observation], [rec.instruction]), dtype=np.float32)[0]
        except Exception as exc:  # noqa: BLE001 - a policy error is recorded like a simulator error
            rec._fail(exc)
            break
        lc = getattr(policy, "last_clean_actions", None)
        rec.execute(chunk, None if lc is None else np.asarray(lc, dtype=np.float32)[0])
    return rec.finish(_policy_name(policy))
