"""Glue between the simulator's :class:`sims.demos.EpisodeRecording` and the lake's :class:`EpisodeData`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sims.demos import EpisodeRecording
from storage_schemas import EpisodeData, EpisodeMeta, Source, rollout_episode_id


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to simulate. Its id is deterministic, so a retried shard never duplicates."""

    suite: str
    task_id: int
    init_state_index: int
    seed: int
    iteration: int = 0
    source: Source = Source.ROLLOUT
    policy: str = "expert"  # expert | noisy_expert | random | model
    policy_version: str | None = None
    planning: bool = False
    image_every: int = 4
    settings: str = ""  # inference settings that change behaviour (see tasks.rollouts.inference_settings)

    @property
    def episode_id(self) -> str:
        # Planning on/off, the model version and the inference settings make different episodes of the same init
        # state and seed (an ablation in the same workspace does not find the other setting's episodes "done").
        who = self.policy + ("+planning" if self.planning else "") + (f"@{self.policy_version}" if self.policy_version else "")
        who += f"#{self.settings}" if self.settings else ""
        return rollout_episode_id(self.source, self.iteration, self.suite, self.task_id, self.init_state_index,
                                  self.seed, who)


def to_episode(rec: EpisodeRecording, req: EpisodeRequest, dataset_id: str, gamma: float = 0.99) -> EpisodeData:
    """Convert a recording to lake rows: sparse terminal reward, value targets, images at rendered steps.

    Step rows are the observations before each action, t in [0, T); the recording's images are at rows
    < T (every ``image_every``-th and the last, T - 1). Its ``final_images`` (after the last action) have
    no row and are not stored.
    """
    meta = EpisodeMeta(
        episode_id=req.episode_id, source=req.source, suite=req.suite, task_id=req.task_id,
        instruction=rec.task.instruction, dataset_id=dataset_id, iteration=req.iteration,
        policy=rec.policy_name if req.policy != "model" else "model", policy_version=req.policy_version,
        planning=req.planning, seed=req.seed, init_state_index=req.init_state_index,
        success=bool(rec.success) and rec.error is None, wall_time_s=float(rec.wall_time_s), gamma=gamma,
        error=rec.error, inference=req.settings or None,
    )
    # The recorder keeps rows aligned (len(proprio) == len(actions)); EpisodeData checks it.
    images = {cam: {int(t): frames[i] for i, t in enumerate(rec.image_steps)}
              for cam, frames in rec.images.items() if len(frames)}
    actions = np.asarray(rec.actions)
    clean = rec.clean_actions
    expert = None if clean is None or np.array_equal(np.asarray(clean, np.float32), actions.astype(np.float32)) else clean
    return EpisodeData(meta, np.asarray(rec.proprio), actions, images, rec.object_state, expert)
