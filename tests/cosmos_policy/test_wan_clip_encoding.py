"""The reference's Wan VAE slot encoding (``TokenizerConfig.wan_encoding="clip"``), on a small randomly initialised
``AutoencoderKLWan`` saved with diffusers (real weights cannot be downloaded here: these tests check the encoding's
layout, causality and train/inference consistency, not what it does for learning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig, TokenizerConfig, get_config
from cosmos_policy.latent_cache import LatentCache, read_entry
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import compute_stats
from cosmos_policy.policy import CosmosPolicy
from cosmos_policy.samples import batch_from_rows, encode_episode, sample_rows, valid_steps
from cosmos_policy.tokenizer import WanVAETokenizer, build_tokenizer, encode_slots, images_to_tensor
from sims.types import Observation
from tests.cosmos_policy.conftest import make_episode
from tests.fixtures.pretrained import save_wan_vae

LAY = libero_layout(latent_hw=8)  # 0 blank, 1 proprio, 2-3 cameras, 4 action, 5 future proprio, 6-7 cameras, 8 value


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan_vae")
    save_wan_vae(folder)
    return folder


@pytest.fixture(scope="module")
def clip_tok(vae_dir):
    return build_tokenizer(TokenizerConfig(kind="wan", path=str(vae_dir), image_size=64))


def _images(rng, n=2):
    return {c: rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for c in LAY.camera_names}


def test_clip_encoding_is_the_reference_clip_built_by_hand(clip_tok, vae_dir):
    assert isinstance(clip_tok, WanVAETokenizer) and clip_tok.contextual and clip_tok.frames_per_slot == 4
    rng = np.random.default_rng(0)
    now, later = _images(rng), _images(rng)
    cur, fut = clip_tok.encode_clip(LAY, now, later)

    # By hand: black first frame alone, then 4 frames per slot (black where injection overwrites).
    def four(images):
        return images_to_tensor(images, 64)[:, :, None].repeat(1, 1, 4, 1, 1)

    black = torch.full((2, 3, 1, 64, 64), -1.0)
    clip = torch.cat([black, black.repeat(1, 1, 4, 1, 1), four(now["eye_in_hand"]), four(now["agentview"]),
                      black.repeat(1, 1, 4, 1, 1), black.repeat(1, 1, 4, 1, 1), four(later["eye_in_hand"]),
                      four(later["agentview"])], dim=2)
    with torch.no_grad():
        raw = clip_tok.vae.encode(clip).latent_dist.mode()
    lat = (raw - clip_tok.mean) * clip_tok.inv_std
    assert lat.shape == (2, 16, 8, 8, 8)
    for cam, i, j in (("eye_in_hand", 2, 6), ("agentview", 3, 7)):
        assert torch.allclose(cur[cam], lat[:, :, i], atol=1e-5)
        assert torch.allclose(fut[cam], lat[:, :, j], atol=1e-5)
    # The blank slot is the encoding of one black frame (the clip's first frame, encoded alone), not zeros.
    blank = clip_tok.blank_latent()
    assert blank.shape == (16, 8, 8) and torch.allclose(blank, lat[0, :, 0], atol=1e-5) and blank.abs().max() > 0

    # Causal: the prefix clip (current images only) gives the same current latents.
    alone, none = clip_tok.encode_clip(LAY, now)
    assert none is None and all(torch.allclose(alone[c], cur[c], atol=1e-5) for c in LAY.camera_names)
    # Contextual: the wrist image changes the third-person latent that follows it; the frame encoding does not.
    other = {**now, "eye_in_hand": _images(rng)["eye_in_hand"]}
    assert not torch.allclose(clip_tok.encode_clip(LAY, other)[0]["agentview"], cur["agentview"], atol=1e-4)
    frame = build_tokenizer(TokenizerConfig(kind="wan", path=str(vae_dir), image_size=64, wan_encoding="frame"))
    assert not frame.contextual and frame.blank_latent() is None and frame.fingerprint != clip_tok.fingerprint
    f_cur, _ = encode_slots(frame, LAY, now)
    assert torch.equal(encode_slots(frame, LAY, other)[0]["agentview"], f_cur["agentview"])
    assert not torch.allclose(f_cur["agentview"], cur["agentview"], atol=1e-4)
    with pytest.raises(KeyError, match="lack cameras"):
        encode_slots(clip_tok, LAY, {"agentview": now["agentview"]})


def test_clip_latents_train_and_act_on_the_same_frames(clip_tok, vae_dir):
    """Training rows (encode_episode → sample_rows → batch) and the policy at a query step see the same latents:
    the current frames, the blank frame and, for an observed future, the future frames."""
    rng = np.random.default_rng(1)
    ep = make_episode(LAY, rng, length=40)
    with pytest.raises(ValueError, match="needs the layout"):
        encode_episode(clip_tok, ep)
    lat = encode_episode(clip_tok, ep, layout=LAY)
    assert lat.blank is not None and lat.future_latents is not None
    steps = valid_steps(lat, LAY.chunk_size)
    rows = sample_rows(lat, LAY)
    i, t = 1, int(steps[1])
    pos, fpos = list(ep.image_steps).index(t), list(ep.image_steps).index(t + LAY.chunk_size)
    now = {c: ep.images[c][pos:pos + 1] for c in LAY.camera_names}
    later = {c: ep.images[c][fpos:fpos + 1] for c in LAY.camera_names}
    cur, fut = clip_tok.encode_clip(LAY, now, later)
    for c in LAY.camera_names:  # stored as float16
        assert np.allclose(rows[f"latent.{c}"][i], cur[c][0].numpy(), atol=2e-2)
        assert np.allclose(rows[f"future_latent.{c}"][i], fut[c][0].numpy(), atol=2e-2)
    stats = compute_stats([ep.proprio], [ep.actions])
    batch = batch_from_rows({k: v[i:i + 1] for k, v in rows.items()}, ["world_model"], LAY, stats)
    assert torch.allclose(batch.latents[0, :, 0], clip_tok.blank_latent(), atol=2e-2)

    cfg: CosmosPolicyConfig = get_config("tiny", LAY, tokenizer=TokenizerConfig(kind="wan", path=str(vae_dir),
                                                                                image_size=64))
    torch.manual_seed(0)
    policy = CosmosPolicy(CosmosPolicyModel(cfg).eval(), stats)
    assert policy.tokenizer.contextual
    obs = Observation(images={c: v[0] for c, v in now.items()}, proprio=ep.proprio[t])
    seen = policy.current_latents([obs])
    for c in LAY.camera_names:
        assert torch.allclose(seen[0, :, LAY.camera_index(c)], batch.latents[0, :, LAY.camera_index(c)], atol=2e-2)
    assert torch.allclose(seen[0, :, 0], batch.latents[0, :, 0], atol=2e-2)
    assert torch.allclose(seen[0, :, 1], batch.latents[0, :, 1], atol=1e-5)  # proprio injection
    reached = Observation(images={c: v[0] for c, v in later.items()}, proprio=ep.proprio[t + LAY.chunk_size])
    both = policy.observed_latents([obs], [reached])
    for j in LAY.future_indices:
        assert torch.allclose(both[0, :, j], batch.latents[0, :, j], atol=2e-2), LAY.slots[j].name
    assert torch.equal(both[:, :, list(LAY.current_indices)], seen[:, :, list(LAY.current_indices)])


def test_clip_latent_cache_keys_by_layout_and_round_trips(clip_tok, tmp_path):
    rng = np.random.default_rng(2)
    ep = make_episode(LAY, rng, length=40)
    with pytest.raises(ValueError, match="needs the layout"):
        LatentCache(tmp_path, clip_tok)
    cache = LatentCache(tmp_path, clip_tok, layout=LAY)
    assert cache.folder.name.startswith(clip_tok.fingerprint + "-layout")
    other = LatentCache(tmp_path, clip_tok, layout=libero_layout(latent_hw=8, chunk_size=8))
    assert other.folder != cache.folder  # another chunk size puts other images in each clip
    first = cache.encode("ep-1", ep)
    second = LatentCache(tmp_path, clip_tok, layout=LAY).encode("ep-1", ep)
    assert cache.stats.misses == 1
    for c in LAY.camera_names:
        assert np.array_equal(first.future_latents[c], second.future_latents[c])
    assert np.array_equal(first.blank, second.blank)
    entry = read_entry(cache.folder, "ep-1", LAY.camera_names)
    assert np.array_equal(entry.future_latents["agentview"], first.future_latents["agentview"])
    assert np.array_equal(entry.blank, first.blank) and np.array_equal(entry.image_steps, ep.image_steps)
    # Same images, another length: the clips' future images differ, so the entry is re-encoded.
    again = LatentCache(tmp_path, clip_tok, layout=LAY)
    again.encode("ep-1", make_episode(LAY, np.random.default_rng(2), length=40))
    assert again.stats.hits == 1


def test_wan_encoding_config_defaults_and_old_checkpoints(vae_dir):
    cfg = get_config("tiny", LAY, tokenizer=TokenizerConfig(kind="wan", path=str(vae_dir), image_size=64))
    assert cfg.tokenizer.wan_encoding == "clip"  # the reference's
    data = cfg.to_dict()
    old = {**data, "tokenizer": {k: v for k, v in data["tokenizer"].items() if k != "wan_encoding"}}
    assert CosmosPolicyConfig.from_dict(old).tokenizer.wan_encoding == "frame"  # what it was trained with
    assert CosmosPolicyConfig.from_dict(data).tokenizer.wan_encoding == "clip"
    stand_in = get_config("tiny", LAY).to_dict()
    stand_in["tokenizer"].pop("wan_encoding")
    assert CosmosPolicyConfig.from_dict(stand_in) == get_config("tiny", LAY)  # irrelevant to the stand-in
    with pytest.raises(ValueError, match="wan_encoding"):
        TokenizerConfig(kind="wan", path=str(vae_dir), wan_encoding="video")
