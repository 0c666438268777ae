"""The pretrained paths (Wan VAE tokenizer, T5 text encoder, a Cosmos-Predict2-style pipeline folder) exercised on
small randomly initialised models saved locally with the real library classes' ``save_pretrained``.

Real weights cannot be downloaded here; these folders have the same layout and config keys, so the loading,
shape and caching code is the code a GPU machine runs on the real 2B folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cosmos_policy.checkpoint_io import load_checkpoint, save_checkpoint
from cosmos_policy.configuration_cosmos_policy import TextConfig, TokenizerConfig, get_config
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel, import_cosmos_transformer
from cosmos_policy.normalization import compute_stats
from cosmos_policy.policy import CosmosPolicy
from cosmos_policy.text_conditioning import T5TextEmbedder, build_text_embedder
from cosmos_policy.tokenizer import WanVAETokenizer, build_tokenizer
from sims.types import Observation
from tests.fixtures.pretrained import save_t5, save_tiny_pipeline


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A Cosmos-Predict2-shaped diffusers pipeline folder: transformer/, vae/, text_encoder/, tokenizer/."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("cosmos_predict2_tiny"))


def test_wan_vae_tokenizer_encodes_one_frame_videos_and_normalises(pipeline_dir):
    tok = build_tokenizer(TokenizerConfig(kind="wan", path=str(pipeline_dir), image_size=64))
    assert isinstance(tok, WanVAETokenizer) and tok.latent_channels == 16
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)  # resized to 64 first
    lat = tok.encode(images)
    assert lat.shape == (2, 16, 8, 8) and lat.dtype == torch.float32
    assert torch.equal(lat, tok.encode(images))  # deterministic: the posterior mode, not a sample
    # Same as diffusers' VAE by hand: one-frame video, mode of the posterior, Wan latent normalisation.
    from cosmos_policy.tokenizer import images_to_tensor

    raw = tok.vae.encode(images_to_tensor(images, 64)[:, :, None]).latent_dist.mode()[:, :, 0]
    mean = torch.tensor(tok.vae.config.latents_mean).view(1, 16, 1, 1)
    std = torch.tensor(tok.vae.config.latents_std).view(1, 16, 1, 1)
    assert torch.allclose(lat, (raw - mean) / std, atol=1e-5)
    out = tok.decode(lat)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    # The VAE folder itself works as well as the pipeline folder, and a missing one is a clear error.
    assert torch.equal(build_tokenizer(TokenizerConfig(kind="wan", path=str(pipeline_dir / "vae"),
                                                       image_size=64)).encode(images), lat)


def test_t5_embedder_pads_with_zeros_caches_and_accepts_both_layouts(pipeline_dir, tmp_path):
    emb = build_text_embedder(TextConfig(t5_path=str(pipeline_dir), num_tokens=8), dim=32)
    assert isinstance(emb, T5TextEmbedder)
    out = emb(["put the bowl on the plate", "open the drawer"])
    assert out.shape == (2, 8, 32) and out.dtype == torch.float32
    # "put the bowl on the plate </s>" is 7 tokens: the 8th position is padding and zeroed, as Cosmos does.
    assert out[0, :7].abs().sum(-1).min() > 0 and torch.all(out[0, 7:] == 0)
    assert torch.all(out[1, 4:] == 0) and out[1, :4].abs().sum(-1).min() > 0
    assert emb.embed_one("open the drawer") is emb.embed_one("open the drawer")  # cached per instruction
    # Matches the encoder run by hand.
    ids = emb.tokenizer(["open the drawer"], return_tensors="pt")
    ref = emb.model(**ids).last_hidden_state[0]
    assert torch.allclose(out[1, :4], ref, atol=1e-5)
    # One folder holding encoder + tokenizer works too; a wrong width is refused.
    save_t5(tmp_path / "t5", tmp_path / "t5", d_model=32)
    single = build_text_embedder(TextConfig(t5_path=str(tmp_path / "t5"), num_tokens=8), dim=32)
    assert single(["open the drawer"]).shape == (1, 8, 32)
    with pytest.raises(ValueError, match="T5 width 32 != backbone text_embed_dim 64"):
        build_text_embedder(TextConfig(t5_path=str(pipeline_dir), num_tokens=8), dim=64)
    with pytest.raises(FileNotFoundError, match="no T5 encoder config.json"):
        build_text_embedder(TextConfig(t5_path=str(tmp_path / "missing")), dim=32)


def test_pipeline_folder_to_fine_tunable_checkpoint_to_policy(pipeline_dir, tmp_path):
    """from_pretrained wires transformer weights, Wan VAE and T5; the saved checkpoint rebuilds all three and the
    policy acts (direct and planning) through them."""
    base = get_config("tiny", libero_layout(latent_hw=8))
    model = CosmosPolicyModel.from_pretrained(base, pipeline_dir).eval()
    cfg = model.config
    assert cfg.tokenizer.kind == "wan" and cfg.tokenizer.path == str(pipeline_dir / "vae")
    assert cfg.text.t5_path == str(pipeline_dir) and cfg.backbone.text_embed_dim == 32
    assert cfg.backbone.patch_size == (1, 2, 2) and cfg.backbone.padding_mask_channel
    assert cfg.noise == base.noise and cfg.layout == base.layout  # method settings stay the caller's
    from safetensors.torch import load_file

    weights = load_file(str(pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(model.transformer.state_dict()[k], v) for k, v in weights.items())
    assert isinstance(model.text_embedder, T5TextEmbedder)

    rng = np.random.default_rng(0)
    stats = compute_stats([rng.normal(size=(32, 9))], [rng.uniform(-1, 1, (32, 7))])
    ckpt = save_checkpoint(tmp_path / "ckpt", model, stats)
    meta = json.loads((ckpt / "cosmos_policy.json").read_text())
    assert meta["config"]["tokenizer"] == {**meta["config"]["tokenizer"], "kind": "wan",
                                           "path": str(pipeline_dir / "vae")}
    loaded, _ = load_checkpoint(ckpt, expected_layout=base.layout)
    assert loaded.config == cfg and isinstance(loaded.text_embedder, T5TextEmbedder)

    policy = CosmosPolicy.from_checkpoint(ckpt, expected_layout=base.layout, seed=0)
    assert isinstance(policy.tokenizer, WanVAETokenizer)
    obs = [Observation(images={c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                               for c in ("agentview", "eye_in_hand")},
                       proprio=rng.normal(size=9).astype(np.float32)) for _ in range(2)]
    actions = policy.act(obs, ["put the bowl on the plate", "open the drawer"])
    assert actions.shape == (2, 16, 7) and np.isfinite(actions).all()
    planned = policy.with_planning(True, num_candidates=2, num_world_samples=1, num_value_samples=2).act(
        obs, ["put the bowl on the plate", "open the drawer"])
    assert planned.shape == (2, 16, 7) and np.isfinite(planned).all()


def test_pretrained_folder_errors_are_clear(pipeline_dir, tmp_path):
    base = get_config("tiny", libero_layout(latent_hw=8))
    with pytest.raises(FileNotFoundError, match="no AutoencoderKLWan config.json"):
        CosmosPolicyModel.from_pretrained(base, pipeline_dir, vae_path=tmp_path / "novae")
    import_cosmos_transformer()(in_channels=9, out_channels=8, num_attention_heads=2, attention_head_dim=16,
                                num_layers=1, text_embed_dim=32, adaln_lora_dim=8, max_size=(16, 16, 16),
                                patch_size=(1, 2, 2)).save_pretrained(str(tmp_path / "t8"))
    with pytest.raises(ValueError, match="latent_channels"):
        CosmosPolicyModel.from_pretrained(base, tmp_path / "t8")
    with pytest.raises(ValueError, match="in_channels = out_channels \\+ 1"):
        CosmosPolicyModel.from_pretrained(base, pipeline_dir / "vae")
    cfg_path = tmp_path / "t8" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "in_channels": 17, "out_channels": 16,
                                    "use_crossattn_projection": True}))
    with pytest.raises(ValueError, match="only Cosmos-Predict2 Video2World-style"):
        CosmosPolicyModel.from_pretrained(base, tmp_path / "t8")
