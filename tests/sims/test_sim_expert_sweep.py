"""Long success-rate sweeps of the scripted expert (``-m "sim and slow"``; minutes)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]


@pytest.mark.parametrize(
    ("suite", "threshold", "per_task"), [("libero_object", 0.95, 5), ("libero_spatial", 0.8, 3)]
)
def test_expert_success_rate(suite: str, threshold: float, per_task: int) -> None:
    from sims.demos import record_episode
    from sims.expert import ScriptedExpert, snapshot_supported
    from sims.libero_env import LiberoEnv

    env = LiberoEnv(suite, image_size=32)
    expert = ScriptedExpert([env])
    try:
        for task_id in range(env.num_tasks):
            env.reset(task_id, 0, 0)
            if not snapshot_supported(env.snapshot()):
                continue
            wins = sum(
                record_episode(env, expert, task_id, 11 * i % 50, seed=i, image_every=0).success
                for i in range(per_task)
            )
            assert wins / per_task >= threshold, f"{suite} task {task_id}: {wins}/{per_task}"
    finally:
        env.close()
