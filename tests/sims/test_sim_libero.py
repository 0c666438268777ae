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


def test_goal_object_state_is_the_goal_objects_and_target(object_env) -> None:
    """``object_state="goal"``: 20 floats whatever the task; slot 0 is the goal object's pose and the basket region's
    position (read from the same sim as the full layout), slot 1 is zeros (one goal predicate)."""
    from sims.libero_env import LiberoEnv
    from sims.scene import GOAL_STATE_DIM

    obs = object_env.reset(1, 0, seed=0)
    full, names = obs.object_state, object_env.object_state_layout()
    try:
        object_env.object_state_kind = "goal"
        goal, slices = object_env.object_state(), object_env.object_state_layout()
    finally:
        object_env.object_state_kind = "full"
    assert goal.shape == (GOAL_STATE_DIM,) and goal.dtype == np.float32
    assert np.allclose(goal[slices["goal0.object"]], full[names["cream_cheese_1"]])  # task 1: the cream cheese
    target = object_env._env.sim.data.get_site_xpos("basket_1_contain_region")
    assert np.allclose(goal[slices["goal0.target"]], target, atol=1e-6)
    assert not goal[10:].any()
    with pytest.raises(ValueError, match="object_state must be one of"):
        LiberoEnv("libero_object", object_state="objects")


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


def test_rendering_without_antialiasing_is_the_same_scene_and_switches_back(object_env) -> None:
    """``antialias=False``: one sample per pixel in an image-sized buffer; same scene within a few grey levels;
    switching back restores robosuite's own context (4x multisampling, 640x480)."""
    object_env.reset(0, 0, seed=0)
    ctx = object_env._env.sim._render_context_offscreen
    try:
        with_aa = object_env.render()
        assert ctx.con.offSamples > 0
        object_env.antialias = False
        plain = object_env.render()
        assert (ctx.con.offSamples, ctx.con.offWidth, ctx.con.offHeight) == (0, 64, 64)
        for cam, img in plain.items():
            assert img.shape == (64, 64, 3)
            diff = np.abs(img.astype(float) - with_aa[cam].astype(float))
            assert 0 < diff.mean() < 12, cam  # edges differ, the scene does not
        object_env.antialias = True
        again = object_env.render()
        assert (ctx.con.offSamples, ctx.con.offWidth, ctx.con.offHeight) == (4, 640, 480)
        assert all(np.array_equal(again[c], with_aa[c]) for c in again)
    finally:
        object_env.antialias = True


def test_task_counts_match_libero() -> None:
    from sims.libero_runtime import LIBERO_NUM_TASKS, num_tasks

    assert {s: num_tasks(s) for s in LIBERO_NUM_TASKS} == LIBERO_NUM_TASKS


def test_an_episode_does_not_depend_on_the_episodes_before_it() -> None:
    """Same (task, init state, seed) → same fixture placement and trajectory, whatever ran before in the process
    (LIBERO places fixtures from NumPy's global RNG; the caller's global RNG state is left as it was)."""
    from sims.libero_env import LiberoEnv

    actions = np.random.default_rng(0).uniform(-0.5, 0.5, size=(15, 7)).astype(np.float32)

    def episode(env: LiberoEnv) -> np.ndarray:
        obs = env.reset(4, 22, seed=2)
        out = [obs.object_state, obs.proprio]
        for a in actions:
            r = env.step(a, render=False)
            out += [r.observation.object_state, r.observation.proprio]
        return np.concatenate(out)

    np.random.seed(123)
    expected_draw = np.random.random()
    np.random.seed(123)
    with LiberoEnv("libero_spatial", image_size=32) as fresh:
        first = episode(fresh)
    with LiberoEnv("libero_spatial", image_size=32) as used:
        used.reset(3, 0, seed=0)
        for a in actions:
            used.step(-a, render=False)
        used.reset(4, 0, seed=0)
        after_history = episode(used)
    assert np.random.random() == expected_draw  # the global stream the caller seeded is untouched
    np.testing.assert_array_equal(first, after_history)


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


def test_published_libero_hdf5_ingests_in_the_simulators_convention(object_env, tmp_path) -> None:
    """A simulator episode written in LIBERO's published HDF5 layout (8-dim proprio with axis-angle orientation,
    upside-down images, ``*_rgb`` cameras) ingests back to the simulator's own recording: 9-dim proprio with the
    quaternion, upright images, the layout's camera names; and the same lake then takes simulator episodes."""
    import json

    import h5py
    from robosuite.utils.transform_utils import quat2axisangle

    from flywheel.ingest import ingest
    from flywheel.ingest.common import IngestOptions
    from flywheel.recordings import EpisodeRequest, to_episode
    from sims.demos import record_episode
    from sims.expert import ScriptedExpert
    from storage_schemas import LakeWriter, Source
    from storage_schemas.views import connect

    rec = record_episode(object_env, ScriptedExpert([object_env]), 0, 5, seed=5, image_every=8)
    assert rec.success and rec.error is None
    T = rec.length
    # the published files hold a frame per step: hold each render until the next (only rendered steps are compared)
    held = {c: frames[np.searchsorted(rec.image_steps, np.arange(T), side="right") - 1]
            for c, frames in rec.images.items()}
    path = tmp_path / "libero_object" / "pick_up_the_alphabet_soup_demo.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": rec.task.instruction})
        g = data.create_group("demo_0")
        g["actions"] = rec.actions
        g["rewards"] = np.r_[np.zeros(T - 1), 1].astype(np.uint8)
        g["dones"] = np.r_[np.zeros(T - 1), 1].astype(np.uint8)
        obs = g.create_group("obs")
        obs["gripper_states"] = rec.proprio[:, :2]
        obs["joint_states"] = np.zeros((T, 7))
        obs["ee_pos"] = rec.proprio[:, 2:5]
        obs["ee_ori"] = np.stack([quat2axisangle(q) for q in rec.proprio[:, 5:9].astype(np.float64)])
        obs["agentview_rgb"] = held["agentview"][:, ::-1]  # LIBERO's raw frames are upside down
        obs["eye_in_hand_rgb"] = held["eye_in_hand"][:, ::-1]
    writer = LakeWriter(tmp_path / "lake")
    writer.init()
    summary = ingest(path, writer, IngestOptions(image_size=64, image_every=1))
    assert summary.episodes == 1
    con = connect(writer.layout)
    (suite, dims), = con.sql("SELECT suite, [action_dim, proprio_dim] FROM episodes").fetchall()
    assert (suite, dims) == ("libero_object", [7, 9])
    rows = con.sql("SELECT proprio, action, images FROM steps ORDER BY t").fetchall()
    proprio = np.array([r[0] for r in rows])
    np.testing.assert_allclose(proprio, rec.proprio, atol=1e-5)  # quaternion recovered, sign included
    np.testing.assert_allclose(np.array([r[1] for r in rows]), rec.actions, atol=1e-6)
    from storage_schemas.records import decode_png

    for i, t in enumerate(rec.image_steps):
        images = dict(rows[t][2])
        assert set(images) == {"agentview", "eye_in_hand"}
        np.testing.assert_array_equal(decode_png(images["agentview"]), rec.images["agentview"][i])  # upright
    # the simulator's own episodes go into the same lake and suite without a dimension error
    req = EpisodeRequest("libero_object", 0, 5, 5, source=Source.ROLLOUT, policy="expert")
    writer.write_episodes([to_episode(rec, req, "sim")])
    # A model trained on the ingested demonstration runs in the simulator (smoke: a few steps, no success asked).
    _train_on_lake_then_act_in_the_simulator(writer.layout, object_env, tmp_path, rec.task.instruction)


def _train_on_lake_then_act_in_the_simulator(lake, env, tmp_path, instruction: str) -> None:
    import torch

    from cosmos_policy.checkpoint_io import save_checkpoint
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.policy import CosmosPolicy
    from cosmos_policy.samples import build_batch, compose_batch_specs
    from cosmos_policy.train_step import make_optimizer, train_step
    from flywheel.config import load_config
    from flywheel.model_setup import cache_suite_latents, model_config, suite_stats
    from storage_schemas.stats import compute_suite_stats

    compute_suite_stats(lake, "libero_object")
    cfg = load_config("smoke")
    cached = cache_suite_latents(cfg, lake, tmp_path / "cache", "libero_object", where="source = 'demo'",
                                 progress=False)
    assert len(cached.latents) == 1 and cached.latents[0].instruction == instruction
    mcfg = model_config(cfg, "libero_object")
    stats = suite_stats(lake, "libero_object")
    torch.manual_seed(0)
    model = CosmosPolicyModel(mcfg)
    opt = make_optimizer(model, mcfg.train)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for _ in range(3):
        specs = compose_batch_specs(cached.latents, 4, mcfg.train.fractions, mcfg.layout.chunk_size, rng)
        metrics = train_step(model, opt, build_batch(cached.latents, specs, mcfg.layout, stats), gen)
        assert np.isfinite(metrics["loss"])
    ckpt = save_checkpoint(tmp_path / "ckpt", model, stats)
    policy = CosmosPolicy.from_checkpoint(ckpt, expected_layout=mcfg.layout)
    obs = env.reset(0, 6, seed=6)
    chunk = policy.act([obs], [instruction])[0]
    assert chunk.shape == (mcfg.layout.chunk_size, 7) and np.isfinite(chunk).all()
    for action in chunk[:4]:
        result = env.step(action, render=False)
    assert result.observation.proprio.shape == (9,)


def test_coarser_visual_meshes_render_the_same_scene_and_leave_physics_alone() -> None:
    """``mesh_resolution``: visual meshes clustered on a grid render within a few grey levels of the shipped ones,
    with far fewer triangles, and the trajectory is the same to the bit (only visual triangles change)."""
    from sims.libero_env import LiberoEnv

    actions = np.random.default_rng(1).uniform(-0.5, 0.5, size=(10, 7)).astype(np.float32)
    runs = {}
    for res in (None, 32):
        env = LiberoEnv("libero_object", 64, antialias=False, object_state="goal", mesh_resolution=res)
        try:
            obs = env.reset(2, 41, seed=3)
            frames = [obs.images]
            states = [obs.proprio, obs.object_state]
            for a in actions:
                r = env.step(a, render=True)
                states += [r.observation.proprio, r.observation.object_state]
            frames.append(r.observation.images)
            model = env._env.sim.model._model
            runs[res] = (np.concatenate(states), frames, int(model.mesh_facenum.sum()))
        finally:
            env.close()
    (full_states, full_frames, full_faces), (cheap_states, cheap_frames, cheap_faces) = runs[None], runs[32]
    assert np.array_equal(full_states, cheap_states)
    assert cheap_faces < full_faces / 2  # 384k -> 129k triangles in all (visual ones: 308k -> 54k)
    for a, b in zip(full_frames, cheap_frames, strict=True):
        for cam in a:
            diff = np.abs(a[cam].astype(float) - b[cam].astype(float))
            assert 0 < diff.mean() < 6, cam
