"""Simulator tests (LIBERO / RoboCasa). Run with ``-m sim``; each stays under ~60 s on 2 cores."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def object_env():
    from sims.libero_env import LiberoEnv

    env = LiberoEnv("libero_object", image_size=64)
    yield env
    env.close()


def test_libero_reset_step_shapes_and_upright_image(object_env) -> None:
    obs = object_env.reset(0, 0, seed=0)
    assert set(obs.images) == {"agentview", "eye_in_hand"}
    img = obs.images["agentview"]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert obs.proprio.shape == (9,) and obs.proprio.dtype == np.float32
    layout = object_env.object_state_layout()
    assert obs.object_state is not None and obs.object_state.shape == (max(s.stop for s in layout.values()),)
    # upright: the wooden floor fills the bottom rows of agentview, the darker background/robot the top
    assert img[-8:].mean() > img[:8].mean()
    res = object_env.step(np.zeros(7, np.float32), render=False)
    assert res.observation.images == {} and not res.done and res.info["t"] == 1
    res = object_env.step(np.zeros(7, np.float32), render=True)
    assert res.observation.images["eye_in_hand"].shape == (64, 64, 3)
    with pytest.raises(ValueError):
        object_env.step(np.zeros(6))
    spec = object_env.task_spec(0)
    assert spec.max_steps == 280 and spec.num_init_states == 50 and "alphabet soup" in spec.instruction


def test_task_counts_match_libero() -> None:
    from sims.libero_runtime import LIBERO_NUM_TASKS, num_tasks

    assert {s: num_tasks(s) for s in LIBERO_NUM_TASKS} == LIBERO_NUM_TASKS


def test_expert_solves_libero_object_init_states(object_env) -> None:
    from sims.demos import record_episode
    from sims.expert import ScriptedExpert

    expert = ScriptedExpert([object_env])
    for task_id, init in ((0, 3), (6, 7)):
        rec = record_episode(object_env, expert, task_id, init, seed=init, image_every=8)
        assert rec.error is None, rec.error
        assert rec.success, f"task {task_id} init {init} failed after {rec.length} steps"
        assert rec.length < 200
        assert rec.actions.shape == (rec.length, 7) and rec.proprio.shape == (rec.length, 9)
        assert rec.image_steps[0] == 0 and rec.image_steps[-1] == rec.length - 1  # last row, not T
        assert set(rec.final_images) == {"agentview", "eye_in_hand"}
        assert rec.images["agentview"].shape[0] == len(rec.image_steps)


def test_noisy_expert_differs_and_is_deterministic(object_env) -> None:
    from sims.demos import record_episode
    from sims.expert import NoiseConfig, ScriptedExpert

    noisy = NoiseConfig(action_noise=0.3, perturb_prob=0.05)
    recs = [
        record_episode(object_env, ScriptedExpert([object_env], noise=noisy, seed=1), 0, 0, seed=0, image_every=0)
        for _ in range(2)
    ]
    np.testing.assert_allclose(recs[0].actions[:30], recs[1].actions[:30])
    assert recs[0].clean_actions is not None
    assert not np.allclose(recs[0].actions, recs[0].clean_actions)
    assert recs[0].policy_name == "scripted_expert_noisy"


def test_robocasa_stock_task_without_assets_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from sims.factory import make_env
    from sims.robocasa_env import RoboCasaAssetsMissingError

    monkeypatch.setenv("ROBOCASA_ASSETS_PATH", str(tmp_path))
    with pytest.raises(RoboCasaAssetsMissingError) as info:
        make_env("robocasa_PickPlaceCounterToCabinet")
    msg = str(info.value)
    assert "ROBOCASA_ASSETS_PATH" in msg and "download_kitchen_assets" in msg and "robocasa_fixture" in msg


def test_robocasa_fixture_kitchen_builds_and_steps(tmp_path) -> None:
    from sims.factory import make_env

    env = make_env("robocasa_fixture", image_size=32, cache_dir=str(tmp_path))
    try:
        obs = env.reset(0, 0, seed=0)
        assert env.camera_names == ("agentview_left", "agentview_right", "eye_in_hand")
        assert set(obs.images) == set(env.camera_names)
        assert obs.images["eye_in_hand"].shape == (32, 32, 3)
        assert obs.proprio.shape == (68,)
        assert "not the benchmark" in env.task_spec(0).instruction
        res = env.step(np.zeros(12), render=False)
        assert res.observation.proprio.shape == (68,) and not res.done
    finally:
        env.close()
