"""Latent cache: encoded once per (episode, tokenizer, images), atomic, never stale."""

import numpy as np
import pytest

from cosmos_policy.latent_cache import LatentCache, images_digest
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.samples import encode_episode
from cosmos_policy.tokenizer import PixelShuffleTokenizer
from tests.cosmos_policy.conftest import make_episode


class CountingTokenizer:
    """Test double: the real stand-in tokenizer, counting how many images it encodes."""

    def __init__(self, seed: int = 0) -> None:
        self.inner = PixelShuffleTokenizer(64, 16, seed)
        self.image_size, self.latent_channels = 64, 16
        self.fingerprint = self.inner.fingerprint
        self.images = 0

    def encode(self, images):
        self.images += len(images)
        return self.inner.encode(images)

    def decode(self, latents):
        return self.inner.decode(latents)


@pytest.fixture
def episode(tiny_config):
    return make_episode(tiny_config.layout, np.random.default_rng(0), length=40)


def test_encoded_once_then_read(tmp_path, episode):
    tok = CountingTokenizer()
    cache = LatentCache(tmp_path, tok)
    first = cache.encode("ep-1", episode)
    n_images = sum(len(v) for v in episode.images.values())
    assert tok.images == n_images and (cache.stats.hits, cache.stats.misses) == (0, 1)
    assert cache.path("ep-1").exists() and "ep-1" in cache
    reference = encode_episode(tok.inner, episode)
    for cam in episode.images:
        assert np.array_equal(first.latents[cam], reference.latents[cam])
    again = LatentCache(tmp_path, tok)  # a new process reading the same folder
    second = again.encode("ep-1", episode)
    assert tok.images == n_images and (again.stats.hits, again.stats.misses) == (1, 0)
    for cam in episode.images:
        assert second.latents[cam].dtype == np.float16
        assert np.array_equal(second.latents[cam], first.latents[cam])
    assert np.array_equal(second.actions, first.actions) and second.length == 40
    assert not list(tmp_path.rglob("*.tmp"))


def test_other_images_other_tokenizer_or_corrupt_file_re_encode(tmp_path, episode):
    tok = CountingTokenizer()
    cache = LatentCache(tmp_path, tok)
    cache.encode("ep-1", episode)
    changed = make_episode(libero_layout(), np.random.default_rng(1), length=40)
    assert images_digest(changed, list(changed.images)) != images_digest(episode, list(episode.images))
    out = cache.encode("ep-1", changed)  # same id, other images: never served stale
    assert cache.stats.misses == 2
    assert np.array_equal(out.latents["agentview"], encode_episode(tok.inner, changed).latents["agentview"])
    other = LatentCache(tmp_path, CountingTokenizer(seed=1))
    assert other.folder != cache.folder
    other.encode("ep-1", changed)
    assert other.stats.misses == 1
    cache.path("ep-1").write_bytes(cache.path("ep-1").read_bytes()[:50])  # truncated by a crash elsewhere
    fresh = LatentCache(tmp_path, tok)
    fresh.encode("ep-1", changed)
    assert fresh.stats.misses == 1 and LatentCache(tmp_path, tok).load("ep-1", ["agentview"]) is not None


def test_bad_input_is_refused(tmp_path, episode):
    cache = LatentCache(tmp_path, CountingTokenizer())
    with pytest.raises(KeyError, match="no images for cameras \\['wrist'\\]"):
        cache.encode("ep-1", episode, cameras=["wrist"])
    with pytest.raises(ValueError, match="not usable as a file name"):
        cache.encode("../escape", episode)

    class NoFingerprint:
        image_size, latent_channels = 64, 16

    with pytest.raises(ValueError, match="no 'fingerprint'"):
        LatentCache(tmp_path, NoFingerprint())
