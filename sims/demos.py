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

    Cameras are rendered only where needed: at image rows (every ``image_every``-th row, the last row
    ``T - 1`` and the final observation after the last action; ``image_every=0`` records no images) and,
    for policies that need images (``requires_images`` attribute, default True), at every chunk boundary
    where the policy is queried.

    Whether a row is the last is only known after its action has run (first success). Environments
    that can snapshot their state (``save_state() -> token`` and ``render_state(token) -> images``,
    e.g. :class:`sims.libero_env.LiberoEnv`) keep a cheap state token per step and render the last row
    afterwards; for other environments every row is rendered while images are on (correct, slower).
    The step limit (``TaskSpec.max_steps``) is known ahead, so that last row is rendered directly.

    Args:
        env: any :class:`sims.types.Env`.
        policy: any :class:`sims.types.Policy`; it gets batches of one observation.
        image_every: image stride in steps (0 disables images).
        instruction: overrides the task's instruction given to the policy.
    """
    if image_every < 0:
        raise ValueError(f"image_every must be >= 0, got {image_every}")
    t0 = time.perf_counter()
    spec = env.task_spec(task_id)
    text = instruction if instruction is not None else spec.instruction
    needs_images = bool(getattr(policy, "requires_images", True))
    can_rewind = callable(getattr(env, "save_state", None)) and callable(getattr(env, "render_state", None))
    actions: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    proprio: list[np.ndarray] = []
    objstate: list[np.ndarray] = []
    steps: list[int] = []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in env.camera_names}
    final_images: dict[str, np.ndarray] = {}
    success, error = False, None
    obs: Observation | None = None
    last_row_images: Mapping[str, np.ndarray] | None = None  # images of the current row, if rendered
    token: object = None  # state of the current row (rewindable envs) when its images are not yet taken
    sdim: int | None = None  # object-state size when the env reports one

    def keep_images(t: int, images: Mapping[str, np.ndarray]) -> None:
        steps.append(t)
        for cam in env.camera_names:
            frames[cam].append(np.asarray(images[cam], dtype=np.uint8))

    def is_image_row(t: int) -> bool:
        return bool(image_every) and (t % image_every == 0 or t == spec.max_steps - 1)

    try:
        obs = env.reset(task_id, init_state_index, seed)
        sdim = None if obs.object_state is None else int(np.asarray(obs.object_state).size)
        chunk: np.ndarray = np.zeros((0, env.action_dim), dtype=np.float32)
        has_clean = False
        done, t = False, 0
        while not done:
            # obs is row t (before action t)
            want = is_image_row(t) or (bool(image_every) and not can_rewind)
            if (want or (needs_images and len(chunk) == 0)) and not obs.images:
                obs = Observation(env.render(), obs.proprio, obs.object_state)
            if is_image_row(t):
                keep_images(t, obs.images)
            last_row_images = obs.images if obs.images else None
            token = env.save_state() if image_every and can_rewind and last_row_images is None else None
            if len(chunk) == 0:
                chunk = np.asarray(policy.act([obs], [text]), dtype=np.float32)[0]
                lc = getattr(policy, "last_clean_actions", None)
                has_clean = lc is not None
                clean_chunk = np.asarray(lc, dtype=np.float32)[0] if has_clean else chunk
            action, chunk = chunk[0], chunk[1:]
            # images for row t + 1 come with the step when they are surely needed
            render = (
                is_image_row(t + 1) or (bool(image_every) and not can_rewind) or (needs_images and not len(chunk))
            )
            result = env.step(action, render=render)
            # action t executed: append row t (so a raising step leaves every array aligned)
            actions.append(np.asarray(action, dtype=np.float32))
            if has_clean:
                clean.append(clean_chunk[len(clean_chunk) - len(chunk) - 1])
            proprio.append(np.asarray(obs.proprio, dtype=np.float32))
            if obs.object_state is not None:
                objstate.append(np.asarray(obs.object_state, dtype=np.float32))
            obs, done, success = result.observation, result.done, result.success
            t += 1
        if image_every:
            final_images = {c: np.asarray(v, np.uint8) for c, v in (obs.images or env.render()).items()}
            if t > 0 and (not steps or steps[-1] != t - 1):  # the last row T - 1
                imgs = last_row_images if last_row_images is not None else env.render_state(token)  # type: ignore[attr-defined]
                keep_images(t - 1, imgs)
    except Exception as exc:  # recorded, not raised: one crashed episode must not kill a shard
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        success = False
        final_images = {}
    n = len(actions)
    keep = [i for i, s in enumerate(steps) if s < n]  # a crash can leave the image of an unexecuted row
    adim, pdim = env.action_dim, env.proprio_dim
    return EpisodeRecording(
        task=spec,
        init_state_index=init_state_index,
        seed=seed,
        actions=np.stack(actions) if actions else np.zeros((0, adim), np.float32),
        proprio=np.stack(proprio) if proprio else np.zeros((0, pdim), np.float32),
        object_state=None
        if sdim is None or len(objstate) != n
        else np.asarray(objstate, np.float32).reshape(n, sdim),
        image_steps=np.asarray([steps[i] for i in keep], dtype=np.int64),
        images={
            c: np.stack([f[i] for i in keep]) if keep else np.zeros((0, 0, 0, 3), np.uint8)
            for c, f in frames.items()
        },
        success=bool(success),
        length=n,
        wall_time_s=time.perf_counter() - t0,
        policy_name=_policy_name(policy),
        error=error,
        clean_actions=np.stack(clean) if clean and len(clean) == n else None,
        final_proprio=None if obs is None else np.asarray(obs.proprio, dtype=np.float32),
        final_images=final_images,
    )
