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

    Attributes:
        task: the task's :class:`TaskSpec`.
        init_state_index / seed: what ``reset`` got.
        actions: ``(T, A)`` float32 executed actions.
        proprio: ``(T, P)`` float32, the observation *before* each action.
        object_state: ``(T, S)`` float32 privileged object state before each action (None if absent).
        image_steps: ``(N,)`` int64 observation indices that have images: every ``image_every``-th step
            ``t < T`` plus the last observation ``T`` (after the final action).
        images: camera -> ``(N, H, W, 3)`` uint8, aligned with ``image_steps``.
        success: the task's goal predicate held at the end; length: T; wall_time_s: seconds.
        policy_name: who acted; error: a message if the episode crashed (then ``success`` is False).
        clean_actions: ``(T, A)`` the behaviour policy's un-noised actions when it exposes them
            (``last_clean_actions``), else None.
        final_proprio: ``(P,)`` the observation after the last action.
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

    Cameras are rendered only at image steps (every ``image_every``-th observation and the last one;
    ``image_every=0`` records no images) and, for policies that need images (``requires_images``
    attribute, default True), at every chunk boundary where the policy is queried.

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
    actions: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    proprio: list[np.ndarray] = []
    objstate: list[np.ndarray] = []
    steps: list[int] = []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in env.camera_names}
    success, error = False, None
    obs: Observation | None = None

    def keep_images(t: int, images: Mapping[str, np.ndarray]) -> None:
        steps.append(t)
        for cam in env.camera_names:
            frames[cam].append(np.asarray(images[cam], dtype=np.uint8))

    try:
        obs = env.reset(task_id, init_state_index, seed)
        if image_every:
            keep_images(0, obs.images)
        chunk: np.ndarray = np.zeros((0, env.action_dim), dtype=np.float32)
        has_clean = False
        done, t = False, 0
        while not done:
            if len(chunk) == 0:
                if needs_images and not obs.images:
                    obs = Observation(env.render(), obs.proprio, obs.object_state)
                chunk = np.asarray(policy.act([obs], [text]), dtype=np.float32)[0]
                lc = getattr(policy, "last_clean_actions", None)
                has_clean = lc is not None
                clean_chunk = np.asarray(lc, dtype=np.float32)[0] if has_clean else chunk
            action, chunk = chunk[0], chunk[1:]
            if has_clean:
                clean.append(clean_chunk[len(clean_chunk) - len(chunk) - 1])
            proprio.append(np.asarray(obs.proprio, dtype=np.float32))
            if obs.object_state is not None:
                objstate.append(np.asarray(obs.object_state, dtype=np.float32))
            t += 1
            want_image = bool(image_every) and t % image_every == 0
            render = want_image or (needs_images and len(chunk) == 0)
            result = env.step(action, render=render)
            actions.append(np.asarray(action, dtype=np.float32))
            obs, done, success = result.observation, result.done, result.success
            if done and image_every and (not steps or steps[-1] != t):
                keep_images(t, obs.images if obs.images else env.render())
            elif want_image:
                keep_images(t, obs.images)
    except Exception as exc:  # recorded, not raised: one crashed episode must not kill a shard
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        success = False
    n = len(actions)
    adim, pdim = env.action_dim, env.proprio_dim
    return EpisodeRecording(
        task=spec,
        init_state_index=init_state_index,
        seed=seed,
        actions=np.stack(actions) if actions else np.zeros((0, adim), np.float32),
        proprio=np.stack(proprio) if proprio else np.zeros((0, pdim), np.float32),
        object_state=np.stack(objstate) if objstate and len(objstate) == n else None,
        image_steps=np.asarray(steps, dtype=np.int64),
        images={c: np.stack(f) if f else np.zeros((0, 0, 0, 3), np.uint8) for c, f in frames.items()},
        success=bool(success),
        length=n,
        wall_time_s=time.perf_counter() - t0,
        policy_name=_policy_name(policy),
        error=error,
        clean_actions=np.stack(clean) if clean and len(clean) == n else None,
        final_proprio=None if obs is None else np.asarray(obs.proprio, dtype=np.float32),
    )
