"""Latent cache benchmark: encoding an episode's images vs reading its cached latents.

Usage: ``python benchmarks/bench_latents.py [--quick] [--threads N]``. Two tokenizers: the CPU stand-in (64 px)
and the Wan 2.1 VAE architecture at 224 px (diffusers' default ``AutoencoderKLWan`` config, randomly
initialised: the same compute as the real weights, which cannot be downloaded here). For each, the same
episodes are encoded (cache miss) and then read (cache hit), alternating, median of repeats, in one run. The
last stdout line is a JSON object: ``<tokenizer>_miss_ms`` / ``_hit_ms`` per episode and ``<tokenizer>_speedup``
(miss ÷ hit), i.e. what caching saves each time training touches an episode again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cosmos_policy.latent_cache import LatentCache
from cosmos_policy.samples import EpisodeArrays
from cosmos_policy.tokenizer import PixelShuffleTokenizer, WanVAETokenizer


def _episode(rng: np.random.Generator, images: int, size: int) -> EpisodeArrays:
    length = 16 * (images - 1) + 1
    return EpisodeArrays(images={c: rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
                                 for c in ("agentview", "eye_in_hand")},
                         image_steps=np.arange(0, length, 16), proprio=rng.normal(size=(length, 9)),
                         actions=rng.normal(size=(length, 7)), success=True, instruction="bench", is_demo=True)


def _wan_tokenizer(folder: Path, image_size: int) -> WanVAETokenizer:
    from cosmos_policy.modeling_cosmos_policy import prepare_diffusers_import

    prepare_diffusers_import()
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan().eval().save_pretrained(str(folder))
    return WanVAETokenizer(str(folder), image_size=image_size)


def _measure(tokenizer, episodes: list[EpisodeArrays], repeats: int) -> tuple[float, float]:
    miss, hit = [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = LatentCache(tmp, tokenizer)
            t0 = time.perf_counter()
            for i, ep in enumerate(episodes):
                cache.encode(f"ep-{r}-{i}", ep)
            miss.append((time.perf_counter() - t0) / len(episodes))
            t0 = time.perf_counter()
            for i, ep in enumerate(episodes):
                cache.encode(f"ep-{r}-{i}", ep)
            hit.append((time.perf_counter() - t0) / len(episodes))
            assert cache.stats.hits == len(episodes) and cache.stats.misses == len(episodes)
    return statistics.median(miss) * 1e3, statistics.median(hit) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images, repeats = (3, 1) if args.quick else (9, 3)  # 9 images/camera = a 129-step episode at K = 16
    result: dict[str, float | int] = {"images_per_camera": images, "repeats": repeats,
                                      "threads": torch.get_num_threads()}
    stand_in = PixelShuffleTokenizer(64, 16, 0)
    miss, hit = _measure(stand_in, [_episode(rng, images, 128) for _ in range(4)], repeats)
    result.update(stand_in_miss_ms=round(miss, 2), stand_in_hit_ms=round(hit, 2), stand_in_speedup=round(miss / hit, 2))
    print(f"stand-in 64px: miss {miss:.1f} ms, hit {hit:.1f} ms per episode ({miss / hit:.1f}x)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wan = _wan_tokenizer(Path(tmp) / "vae", 224)
        miss, hit = _measure(wan, [_episode(rng, images, 256) for _ in range(2)], repeats)
    result.update(wan_miss_ms=round(miss, 1), wan_hit_ms=round(hit, 2), wan_speedup=round(miss / hit, 1))
    print(f"Wan VAE 224px: miss {miss:.0f} ms, hit {hit:.1f} ms per episode ({miss / hit:.0f}x)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
