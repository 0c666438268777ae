"""Simulator tests of the fixture skills and of record_episode on RoboCasa (``-m sim``)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def goal_env():
    from sims.libero_env import LiberoEnv

    env = LiberoEnv("libero_goal", image_size=32)
    yield env
    env.close()


@pytest.mark.parametrize(("task_id", "init"), [(7, 10), (5, 20)])  # turn on the stove; push the plate
def test_expert_solves_stove_and_push_tasks(goal_env, task_id: int, init: int) -> None:
    from sims.demos import record_episode
    from sims.expert import ScriptedExpert

    rec = record_episode(goal_env, ScriptedExpert([goal_env]), task_id, init, seed=init, image_every=16)
    assert rec.error is None, rec.error
    assert rec.success, f"libero_goal task {task_id} init {init} failed after {rec.length} steps"
    assert rec.image_steps[-1] == rec.length - 1 and len(rec.proprio) == rec.length


def test_render_state_rewinds_exactly_and_restores(goal_env) -> None:
    """What record_episode uses for the last row T-1: a rewound render equals the live one at that state."""
    from sims.demos import record_episode
    from sims.expert import ScriptedExpert

    rec = record_episode(goal_env, ScriptedExpert([goal_env]), 7, 0, seed=0, image_every=1000)
    assert rec.success and rec.image_steps.tolist() == [0, rec.length - 1]
    goal_env.reset(7, 0, 0)
    move = np.array([0.8, 0.5, -0.5, 0, 0, 0.3, -1], np.float32)
    for _ in range(5):
        goal_env.step(move, render=False)
    live, token, proprio = goal_env.render(), goal_env.save_state(), goal_env.proprio()
    for _ in range(10):
        goal_env.step(move, render=False)
    after = goal_env.render()
    rewound = goal_env.render_state(token)
    for cam in goal_env.camera_names:
        # a live render after mj_step shows kinematics one 2 ms substep old; the rewound one is exact
        diff = np.abs(rewound[cam].astype(int) - live[cam].astype(int)).mean()
        moved = np.abs(after[cam].astype(int) - live[cam].astype(int)).mean()
        assert diff < moved / 5, (cam, diff, moved)
        back = np.abs(goal_env.render()[cam].astype(int) - after[cam].astype(int)).mean()
        assert back < moved / 5, (cam, back, moved)  # the present state is put back
    assert not np.array_equal(after["agentview"], live["agentview"])  # the arm did move
    assert not np.allclose(goal_env.proprio(), proprio)


def test_robocasa_fixture_records_random_policy_with_three_views(tmp_path) -> None:
    from sims.demos import record_episode
    from sims.factory import make_env
    from sims.random_policy import RandomPolicy

    env = make_env("robocasa_fixture", image_size=32, cache_dir=str(tmp_path), max_steps=24)
    try:
        rec = record_episode(env, RandomPolicy(12, chunk_size=8, seed=0), 0, 0, seed=0, image_every=8)
        assert rec.error is None, rec.error
        assert rec.length == 24 and rec.actions.shape == (24, 12) and rec.proprio.shape == (24, 68)
        assert rec.image_steps.tolist() == [0, 8, 16, 23]
        assert set(rec.images) == {"agentview_left", "agentview_right", "eye_in_hand"}
        for imgs in rec.images.values():
            assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8 and imgs.std() > 0
        assert set(rec.final_images) == set(rec.images)
    finally:
        env.close()
