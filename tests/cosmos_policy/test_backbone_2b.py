"""2B preset shape check on the meta device, and loading a diffusers-format transformer folder."""

import pytest
import torch

from cosmos_policy.configuration_cosmos_policy import BackboneConfig, get_config
from cosmos_policy.latent_layout import libero_layout, robocasa_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel, import_cosmos_transformer


def test_2b_preset_on_meta_device():
    cfg = get_config("2b", libero_layout(latent_hw=28))
    model = CosmosPolicyModel(cfg, device="meta")
    n = model.num_parameters()
    assert 1.94e9 < n < 1.97e9, n
    assert all(p.device.type == "meta" for p in model.parameters())
    tr = model.transformer
    assert tr.patch_embed.proj.weight.shape == (2048, (16 + 1 + 1) * 1 * 2 * 2)
    assert tr.proj_out.weight.shape == (16 * 4, 2048)
    assert len(tr.transformer_blocks) == 28
    assert tr.transformer_blocks[0].attn2.to_k.weight.shape == (2048, 1024)
    assert cfg.layout.num_frames == 9 and cfg.tokenizer.image_size == 224
    x = torch.empty(1, 16, 9, 28, 28, device="meta")
    out = model.denoiser(x, torch.tensor(10.0, device="meta"), cfg.layout.condition_masks(["policy"]).to("meta"),
                         x, torch.empty(1, 512, 1024, device="meta"))
    assert out.shape == (1, 16, 9, 28, 28)
    assert get_config("2b", robocasa_layout(latent_hw=28)).layout.num_frames == 11


def test_load_diffusers_folder_and_torch_only_padding_path(tmp_path, tiny_config):
    """An upstream-style transformer (in_channels=17, concat_padding_mask=True) saved with save_pretrained loads
    into the wrapper, and the wrapper's torch-only padding channel equals diffusers' own padding-mask path."""
    cls = import_cosmos_transformer()
    torch.manual_seed(0)
    upstream = cls(in_channels=17, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                   text_embed_dim=32, adaln_lora_dim=8, max_size=(16, 16, 16), patch_size=(1, 2, 2),
                   rope_scale=(1.0, 1.0, 1.0), concat_padding_mask=True, extra_pos_embed_type=None).eval()
    upstream.save_pretrained(tmp_path / "transformer")
    from dataclasses import replace

    cfg = replace(tiny_config, backbone=replace(tiny_config.backbone, text_embed_dim=32, patch_size=(1, 2, 2)))
    model = CosmosPolicyModel.from_pretrained(cfg, tmp_path).eval()
    assert model.config.backbone.padding_mask_channel and model.config.backbone.num_layers == 1
    assert isinstance(model.config.backbone, BackboneConfig)

    b, t = 2, 9
    x = torch.randn(b, 16, t, 8, 8)
    mask = cfg.layout.condition_masks(["policy", "value"])
    text = torch.randn(b, 4, 32)
    ts = torch.rand(b, 1, t, 1, 1)
    ours = model.transformer(hidden_states=torch.cat([x, mask[:, None, :, None, None].float().expand(b, 1, t, 8, 8),
                                                      torch.zeros(b, 1, t, 8, 8)], 1),
                             timestep=ts, encoder_hidden_states=text, return_dict=False)[0]
    theirs = upstream(hidden_states=x, timestep=ts, encoder_hidden_states=text,
                      condition_mask=mask[:, None, :, None, None].float().expand(b, 1, t, 8, 8),
                      padding_mask=torch.zeros(1, 1, 8, 8), return_dict=False)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_missing_folder_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        CosmosPolicyModel.from_pretrained(tiny_config, tmp_path)
