"""Lake → EpisodeArrays → cached latents, and starting checkpoints from the config (``flywheel model ...``)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cosmos_policy.checkpoint_io import load_checkpoint, read_metadata
from cosmos_policy.tokenizer import PixelShuffleTokenizer
from flywheel.cli.app import app
from flywheel.config import load_config
from flywheel.episodes import EpisodeReadError, cache_latents, read_episode_arrays, select_episodes
from flywheel.model_setup import ModelSetupError, layout_for_suite, model_config
from storage_schemas import EpisodeData, EpisodeMeta, LakeWriter, rollout_episode_id
from tests.fixtures.datasets import make_hdf5

runner = CliRunner()
CAMS = ("eye_in_hand", "agentview")


def _episode(i: int, length: int, cams=CAMS, source: str = "demo", obj_dim: int | None = 4) -> EpisodeData:
    rng = np.random.default_rng(i)
    meta = EpisodeMeta(episode_id=rollout_episode_id(source, 0, "libero_object", i, i, 0), source=source,
                       suite="libero_object", task_id=i, instruction=f"task {i}", dataset_id="test", success=i != 1)
    steps = sorted(set(range(0, length, 4)) | {length - 1})  # rendered every 4 steps, like demos
    images = {c: {t: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for t in steps} for c in cams}
    return EpisodeData(meta, rng.standard_normal((length, 9)), rng.standard_normal((length, 7)), images,
                       object_state=None if obj_dim is None else rng.standard_normal((length, obj_dim)))


@pytest.fixture
def lake(tmp_path):
    writer = LakeWriter(tmp_path / "lake")
    episodes = [_episode(i, 10 + i) for i in range(3)]
    writer.write_episodes(episodes)
    return writer.layout, episodes


def test_lake_episodes_read_back_exactly(lake):
    layout, written = lake
    rows = select_episodes(layout)
    assert rows.num_rows == 3 and select_episodes(layout, "success").num_rows == 2
    got = dict(read_episode_arrays(layout, rows, CAMS, batch_size=2))  # batches cross episode boundaries
    for ep in written:
        arrays = got[ep.meta.episode_id]
        assert arrays.length == len(ep.actions) and arrays.success == ep.meta.success and arrays.is_demo
        assert np.array_equal(arrays.actions, ep.actions) and np.array_equal(arrays.proprio, ep.proprio)
        assert np.array_equal(arrays.object_state, ep.object_state)
        steps = sorted(ep.images["agentview"])
        assert arrays.image_steps.tolist() == steps
        for cam in CAMS:
            assert np.array_equal(arrays.images[cam], np.stack([ep.images[cam][t] for t in steps]))
    with pytest.raises(EpisodeReadError, match="lacks cameras \\['wrist'\\]"):
        list(read_episode_arrays(layout, rows, ["wrist"]))


def test_cache_latents_encodes_each_episode_once(lake, tmp_path):
    layout, _ = lake
    tok = PixelShuffleTokenizer(64, 16, 0)
    first = cache_latents(layout, tok, tmp_path / "cache", CAMS, progress=False)
    assert (first.hits, first.misses, len(first.latents)) == (0, 3, 3)
    second = cache_latents(layout, tok, tmp_path / "cache", CAMS, progress=False)
    assert (second.hits, second.misses) == (3, 0) and second.episode_ids == first.episode_ids
    for a, b in zip(first.latents, second.latents, strict=True):
        assert np.array_equal(a.latents["agentview"], b.latents["agentview"])
    assert a.latents["agentview"].shape == (len(a.image_steps), 16, 8, 8)


def test_cached_lake_latents_feed_a_training_step(lake, tmp_path):
    """The whole data path: lake → cached latents → mixed batch → one optimiser step with finite metrics."""
    import torch

    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.samples import build_batch, compose_batch_specs
    from cosmos_policy.train_step import make_optimizer, train_step
    from flywheel.model_setup import cache_suite_latents, suite_stats
    from storage_schemas.stats import compute_suite_stats

    layout, _ = lake
    compute_suite_stats(layout, "libero_object")  # what ingestion / demo generation write
    cfg = load_config("smoke")
    cached = cache_suite_latents(cfg, layout, tmp_path / "cache", "libero_object", progress=False)
    mcfg = model_config(cfg, "libero_object")
    specs = compose_batch_specs(cached.latents, 6, mcfg.train.fractions, mcfg.layout.chunk_size,
                                np.random.default_rng(0))
    batch = build_batch(cached.latents, specs, mcfg.layout, suite_stats(layout, "libero_object"))
    torch.manual_seed(0)
    model = CosmosPolicyModel(mcfg)
    metrics = train_step(model, make_optimizer(model, mcfg.train), batch, torch.Generator().manual_seed(0))
    assert all(np.isfinite(metrics[k]) for k in ("loss", "action_l1", "value_mae", "grad_norm"))


def test_model_config_layouts_and_pretrained_folders(tmp_path):
    cfg = load_config("smoke")
    assert layout_for_suite("libero_goal", "tiny", 16).num_frames == 9
    assert layout_for_suite("robocasa_fixture", "2b", 16).num_frames == 11
    with pytest.raises(ModelSetupError, match="no model layout for suite 'metaworld'"):
        layout_for_suite("metaworld", "tiny", 16)
    assert model_config(cfg, "libero_object").tokenizer.kind == "pixel_shuffle"
    bad = load_config("smoke", overrides=[f"model.vae_path={tmp_path / 'missing'}"])
    with pytest.raises(FileNotFoundError, match="AutoencoderKLWan"):
        model_config(bad, "libero_object")
    from tests.fixtures.pretrained import save_wan_vae

    save_wan_vae(tmp_path / "vae")
    wan = model_config(load_config("smoke", overrides=[f"model.vae_path={tmp_path / 'vae'}"]), "libero_object")
    assert wan.tokenizer.kind == "wan" and wan.tokenizer.wan_encoding == "clip"  # the reference's, by default
    frame = load_config("smoke", overrides=[f"model.vae_path={tmp_path / 'vae'}", "model.wan_encoding=frame"])
    assert model_config(frame, "libero_object").tokenizer.wan_encoding == "frame"


def test_cli_model_latents_and_init(home, tmp_path):
    f = make_hdf5(tmp_path / "demos.hdf5", [6, 8], size=64)
    assert runner.invoke(app, ["ingest", str(f), "--profile", "smoke"]).exit_code == 0
    res = runner.invoke(app, ["model", "latents", "--suite", "libero_object", "--profile", "smoke"])
    assert res.exit_code == 0, res.output
    assert "2 episodes of libero_object: 2 encoded, 0 already cached" in res.output
    res = runner.invoke(app, ["model", "latents", "--suite", "libero_object", "--profile", "smoke"])
    assert "0 encoded, 2 already cached" in res.output, res.output
    res = runner.invoke(app, ["model", "init", "--suite", "libero_object", "--profile", "smoke",
                              "--out", str(tmp_path / "init")])
    assert res.exit_code == 0, res.output
    meta = read_metadata(tmp_path / "init")
    assert meta["extra"] == {"suite": "libero_object", "init": "random:0"}
    _, stats = load_checkpoint(tmp_path / "init", expected_layout=layout_for_suite("libero_object", "tiny", 16))
    lake_stats = json.loads((home / "lake" / "meta" / "stats" / "libero_object.json").read_text())
    assert np.allclose(stats.action.max, lake_stats["action"]["max"])
    res = runner.invoke(app, ["model", "init", "--suite", "libero_spatial", "--profile", "smoke"])
    assert res.exit_code == 2 and "no normalisation statistics for 'libero_spatial'" in res.output


def test_model_show_names_the_version_and_components_wherever_the_folder_lies(home, tmp_path):
    import shutil

    from tests.fixtures.checkpoints import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "a" / "ckpt")
    copy = shutil.copytree(ckpt, tmp_path / "b" / "elsewhere")
    shown = []
    for folder in (ckpt, copy):
        res = runner.invoke(app, ["model", "show", str(folder), "--json", "--profile", "smoke"])
        assert res.exit_code == 0, res.output
        shown.append(json.loads(res.output.strip().splitlines()[-1]))
    assert shown[0]["version"] == shown[1]["version"] and shown[0]["version"].startswith("sha-")
    assert shown[0]["components"]["tokenizer"].startswith("pixel_shuffle pixel_shuffle-v1")
    assert shown[0]["components"]["text_encoder"].startswith("hash hash-v1")
    res = runner.invoke(app, ["model", "show", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_object_state_frame_takes_the_demos_goal_state(lake, tmp_path):
    """``model.object_state``: a 20-float goal-state frame, normalised with the demos' statistics; refused when the
    demos recorded another object state, or none."""
    import torch

    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.samples import build_batch, compose_batch_specs
    from cosmos_policy.train_step import make_optimizer, train_step
    from flywheel.model_setup import cache_suite_latents, init_checkpoint
    from sims.scene import GOAL_STATE_DIM
    from storage_schemas.stats import compute_suite_stats

    layout, _ = lake
    assert len(compute_suite_stats(layout, "libero_object").object_state.min) == 4  # every demo step has 4 floats
    cfg = load_config("smoke", overrides=["model.object_state=true"])
    assert layout_for_suite("libero_object", "tiny", 16, object_state=True).object_state_dim == GOAL_STATE_DIM == 20
    with pytest.raises(ModelSetupError, match="needs a LIBERO suite"):
        layout_for_suite("robocasa_fixture", "tiny", 16, object_state=True)
    with pytest.raises(ModelSetupError, match=r"goal object state \(20 floats per step\) but .* have 4 floats"):
        init_checkpoint(cfg, layout, "libero_object", tmp_path / "init")

    LakeWriter(layout.root).write_episodes([_episode(7, 12, obj_dim=None)])  # one demo without any: no statistics
    assert compute_suite_stats(layout, "libero_object").object_state is None
    with pytest.raises(ModelSetupError, match="have none"):
        init_checkpoint(cfg, layout, "libero_object", tmp_path / "init")

    goal = LakeWriter(tmp_path / "goal_lake")
    goal.write_episodes([_episode(i, 14, obj_dim=GOAL_STATE_DIM) for i in range(3)])
    compute_suite_stats(goal.layout, "libero_object")
    _, stats = load_checkpoint(init_checkpoint(cfg, goal.layout, "libero_object", tmp_path / "init"))
    assert stats.object_state is not None and len(stats.object_state.min) == GOAL_STATE_DIM
    cached = cache_suite_latents(cfg, goal.layout, tmp_path / "cache", "libero_object", progress=False)
    mcfg = model_config(cfg, "libero_object")
    specs = compose_batch_specs(cached.latents, 6, mcfg.train.fractions, 16, np.random.default_rng(0))
    batch = build_batch(cached.latents, specs, mcfg.layout, stats)
    torch.manual_seed(0)
    model = CosmosPolicyModel(mcfg)
    assert np.isfinite(train_step(model, make_optimizer(model, mcfg.train), batch)["loss"])
