from dataclasses import replace

import numpy as np
import pytest
import torch

from cosmos_policy.augmentation import camera_slot_groups, random_shift, shift_maps
from cosmos_policy.configuration_cosmos_policy import TrainConfig
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.samples import build_batch, compose_batch_specs
from cosmos_policy.train_step import make_optimizer, train_step


def test_integer_shift_moves_content_and_pads_with_the_edge():
    maps = torch.arange(16.0).reshape(1, 1, 4, 4)
    right = shift_maps(maps, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(right[0, 0, :, 1:], maps[0, 0, :, :3], atol=1e-5)
    assert torch.allclose(right[0, 0, :, 0], maps[0, 0, :, 0], atol=1e-5)  # edge padding
    down = shift_maps(maps, torch.tensor([[0.0, 2.0]]))
    assert torch.allclose(down[0, 0, 2:], maps[0, 0, :2], atol=1e-5)
    assert torch.allclose(shift_maps(maps, torch.zeros(1, 2)), maps, atol=1e-5)


def test_random_shift_moves_cameras_only_and_current_with_future():
    lay = libero_layout()
    assert camera_slot_groups(lay) == [[2, 6], [3, 7]]
    x = torch.randn(5, lay.latent_channels, lay.num_frames, 8, 8)
    for cur, fut in camera_slot_groups(lay):
        x[:, :, fut] = x[:, :, cur]  # a still scene: current == future
    y = random_shift(x, lay, 0.5, torch.Generator().manual_seed(0))
    cams = {i for g in camera_slot_groups(lay) for i in g}
    for i in range(lay.num_frames):
        assert torch.equal(y[:, :, i], x[:, :, i]) != (i in cams), i  # cameras moved, other frames untouched
    for cur, fut in camera_slot_groups(lay):
        assert torch.allclose(y[:, :, cur], y[:, :, fut])  # one shift per camera and sample
    y2 = random_shift(x, lay, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    assert random_shift(x, lay, 0.0) is x
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(x, lay, -1.0)
    with pytest.raises(ValueError, match="augment_shift"):
        TrainConfig(augment_shift=-0.5)


def test_train_step_augments_when_configured(tiny_config, episode_latents, stats):
    specs = compose_batch_specs(episode_latents, 8, (0.5, 0.25, 0.25), 16, np.random.default_rng(0))
    batch = build_batch(episode_latents, specs, tiny_config.layout, stats)
    losses = {}
    for shift in (0.0, 0.5):
        cfg = replace(tiny_config, train=replace(tiny_config.train, augment_shift=shift))
        torch.manual_seed(0)
        model = CosmosPolicyModel(cfg)
        losses[shift] = train_step(model, make_optimizer(model, cfg.train), batch, torch.Generator().manual_seed(0))
    assert losses[0.0]["loss"] != losses[0.5]["loss"]  # the shifted batch is a different batch
    assert np.isfinite(losses[0.5]["loss"])
