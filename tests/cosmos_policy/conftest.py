"""Shared fixtures: a tiny model, a fixed tokenizer and small synthetic episodes (CPU, 1 thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig, get_config
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import NormalizationStats, compute_stats
from cosmos_policy.samples import EpisodeArrays, EpisodeLatents, encode_episode
from cosmos_policy.tokenizer import build_tokenizer


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_episode(layout, rng: np.random.Generator, length: int = 40, success: bool = True, is_demo: bool = True,
                 image_size: int = 64, instruction: str = "put the bowl on the plate") -> EpisodeArrays:
    """Synthetic episode: blocky random images at chunk boundaries + the last step, smooth actions."""
    k = layout.chunk_size
    steps = np.array(sorted(set(range(0, length, k)) | {length - 1}))
    n = len(steps)
    images = {c: np.repeat(np.repeat(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), image_size // 4, 1),
                           image_size // 4, 2) for c in layout.camera_names}
    t = np.arange(length)[:, None]
    actions = np.sin(t * rng.uniform(0.05, 0.3, layout.action_dim) + rng.uniform(0, 6.3, layout.action_dim))
    obj = rng.normal(size=(length, layout.object_state_dim)).astype(np.float32) if layout.object_state_dim else None
    return EpisodeArrays(images=images, image_steps=steps,
                         proprio=rng.normal(size=(length, layout.proprio_dim)).astype(np.float32),
                         actions=actions.astype(np.float32), success=success, instruction=instruction,
                         is_demo=is_demo, object_state=obj)


@pytest.fixture(scope="session")
def tiny_config() -> CosmosPolicyConfig:
    return get_config("tiny", libero_layout())


@pytest.fixture(scope="session")
def tiny_model(tiny_config) -> CosmosPolicyModel:
    torch.manual_seed(0)
    return CosmosPolicyModel(tiny_config).eval()


@pytest.fixture(scope="session")
def tokenizer(tiny_config):
    return build_tokenizer(tiny_config.tokenizer)


@pytest.fixture(scope="session")
def episodes(tiny_config) -> list[EpisodeArrays]:
    rng = np.random.default_rng(0)
    lay = tiny_config.layout
    return [make_episode(lay, rng, length=40 + 8 * i, success=i % 2 == 0, is_demo=i < 2,
                         instruction=f"task {i % 2}") for i in range(4)]


@pytest.fixture(scope="session")
def episode_latents(tokenizer, episodes) -> list[EpisodeLatents]:
    return [encode_episode(tokenizer, ep) for ep in episodes]


@pytest.fixture(scope="session")
def stats(episodes) -> NormalizationStats:
    demos = [e for e in episodes if e.is_demo]
    return compute_stats([e.proprio for e in demos], [e.actions for e in demos])
