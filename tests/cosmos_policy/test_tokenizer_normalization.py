import numpy as np
import pytest
import torch

from cosmos_policy.configuration_cosmos_policy import TokenizerConfig
from cosmos_policy.normalization import MinMax, NormalizationStats, compute_stats
from cosmos_policy.tokenizer import PixelShuffleTokenizer, Tokenizer, build_tokenizer


def test_stand_in_tokenizer_shapes_determinism_and_preview():
    tok = PixelShuffleTokenizer(image_size=64, latent_channels=16, seed=0)
    assert isinstance(tok, Tokenizer)
    rng = np.random.default_rng(0)
    imgs = np.repeat(np.repeat(rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), 8, 1), 8, 2)
    lat = tok.encode(imgs)
    assert lat.shape == (3, 16, 8, 8) and lat.dtype == torch.float32
    assert torch.equal(lat, PixelShuffleTokenizer(64, 16, 0).encode(imgs))  # frozen, deterministic
    rec = tok.decode(lat)
    assert rec.shape == (3, 64, 64, 3) and rec.dtype == np.uint8
    # flat-colour 8x8 blocks lie in the mean-colour directions: the pseudo-inverse reconstructs them.
    assert np.abs(rec.astype(int) - imgs.astype(int)).max() <= 1
    assert torch.allclose(tok.projection @ tok.projection.T, torch.eye(16), atol=1e-5)
    # Latents of a resized image: 128 px inputs are resized to the tokenizer size.
    assert tok.encode(np.zeros((1, 128, 128, 3), np.uint8)).shape == (1, 16, 8, 8)


def test_wan_tokenizer_needs_a_local_folder():
    with pytest.raises(ValueError, match="local weights folder"):
        TokenizerConfig(kind="wan")
    with pytest.raises(FileNotFoundError):
        build_tokenizer(TokenizerConfig(kind="wan", path="/nonexistent/wan", image_size=64))


def test_minmax_round_trip_and_constant_dims():
    mm = MinMax.from_arrays([np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0]]), np.array([[1.0, 5.0, -1.0]])])
    x = np.array([[0.5, 5.0, 0.0]], np.float32)
    y = mm.normalize(x)
    assert np.allclose(y, [[-0.5, 0.0, -0.5]])
    assert np.allclose(mm.unnormalize(y)[:, [0, 2]], x[:, [0, 2]])
    assert np.all(mm.unnormalize(np.array([[5.0, 0.0, -5.0]])) == np.array([[2.0, 5.0, -1.0]], np.float32))


def test_stats_json_round_trip():
    rng = np.random.default_rng(0)
    stats = compute_stats([rng.normal(size=(10, 9))], [rng.normal(size=(10, 7))], [rng.normal(size=(10, 4))])
    back = NormalizationStats.from_json(stats.to_json())
    for name in ("proprio", "action", "object_state"):
        assert np.array_equal(getattr(back, name).min, getattr(stats, name).min)
        assert np.array_equal(getattr(back, name).max, getattr(stats, name).max)
