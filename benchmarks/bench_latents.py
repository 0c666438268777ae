"""Latent cache benchmark: encoding an episode's images vs reading its cached latents.

Usage: ``python benchmarks/bench_latents.py [--quick] [--threads N]``. Tokenizers: the CPU stand-in (64 px) and
the Wan 2.1 VAE architecture at 224 px (diffusers' default ``AutoencoderKLWan`` config, randomly initialised: the
same compute as the real weights, which cannot be downloaded here) with both slot encodings: ``frame`` (each image
alone) and ``clip`` (the reference's: one causal clip per step laid out like the LIBERO latent frames, 4 pixel
frames per slot). For each, the same episodes are encoded (cache miss) and then read (cache hit), median of
repeats; the two Wan encodings alternate (A B B A ...) in one run. The last stdout line is a JSON object:
``<tokenizer>_miss_ms`` / ``_hit_ms`` per episode, ``<tokenizer>_speedup`` (miss ÷ hit: what caching saves each
time training touches an episode again) and ``wan_clip_vs_frame_miss`` (what the reference's encoding costs).
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
from cosmos_policy.latent_layout import LatentLayout, libero_layout
from cosmos_policy.samples import EpisodeArrays
from cosmos_policy.tokenizer import PixelShuffleTokenizer, WanVAETokenizer


def _episode(rng: np.random.Generator, images: int, size: int) -> EpisodeArrays:
    length = 16 * (images - 1) + 1
    return EpisodeArrays(images={c: rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
                                 for c in ("agentview", "eye_in_hand")},
                         image_steps=np.arange(0, length, 16), proprio=rng.normal(size=(length, 9)),
                         actions=rng.normal(size=(length, 7)), success=True, instruction="bench", is_demo=True)


def _save_wan(folder: Path) -> None:
    from cosmos_policy.modeling_cosmos_policy import prepare_diffusers_import

    prepare_diffusers_import()
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan().eval().save_pretrained(str(folder))


def _once(tokenizer, episodes: list[EpisodeArrays], layout: LatentLayout | None) -> tuple[float, float]:
    """Seconds per episode to encode (miss) and then to read (hit) every episode, in a fresh cache."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = LatentCache(tmp, tokenizer, layout=layout)
        t0 = time.perf_counter()
        for i, ep in enumerate(episodes):
            cache.encode(f"ep-{i}", ep)
        miss = (time.perf_counter() - t0) / len(episodes)
        t0 = time.perf_counter()
        for i, ep in enumerate(episodes):
            cache.encode(f"ep-{i}", ep)
        hit = (time.perf_counter() - t0) / len(episodes)
        assert cache.stats.hits == len(episodes) and cache.stats.misses == len(episodes)
    return miss, hit


def _measure(tokenizers: dict, episodes: list[EpisodeArrays], repeats: int, layout: LatentLayout | None
             ) -> dict[str, tuple[float, float]]:
    """Median (miss ms, hit ms) per tokenizer; with two, their order alternates A B B A ..."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in tokenizers}
    for r in range(repeats):
        names = list(tokenizers) if r % 2 == 0 else list(tokenizers)[::-1]
        for name in names:
            times[name].append(_once(tokenizers[name], episodes, layout))
    return {name: (statistics.median(m for m, _ in t) * 1e3, statistics.median(h for _, h in t) * 1e3)
            for name, t in times.items()}


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
    miss, hit = _measure({"stand_in": stand_in}, [_episode(rng, images, 128) for _ in range(4)], repeats,
                         None)["stand_in"]
    result.update(stand_in_miss_ms=round(miss, 2), stand_in_hit_ms=round(hit, 2), stand_in_speedup=round(miss / hit, 2))
    print(f"stand-in 64px: miss {miss:.1f} ms, hit {hit:.1f} ms per episode ({miss / hit:.1f}x)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        _save_wan(Path(tmp) / "vae")
        wan = {f"wan_{e}": WanVAETokenizer(str(Path(tmp) / "vae"), image_size=224, encoding=e)
               for e in ("frame", "clip")}
        result["wan_repeats"] = max(repeats, 2)
        measured = _measure(wan, [_episode(rng, images, 256) for _ in range(2)], result["wan_repeats"],
                            libero_layout(latent_hw=28))
    for name, (miss, hit) in measured.items():
        result.update({f"{name}_miss_ms": round(miss, 1), f"{name}_hit_ms": round(hit, 2),
                       f"{name}_speedup": round(miss / hit, 1)})
        print(f"Wan VAE 224px, {name[4:]} encoding: miss {miss:.0f} ms, hit {hit:.1f} ms per episode "
              f"({miss / hit:.0f}x)", flush=True)
    ratio = measured["wan_clip"][0] / measured["wan_frame"][0]
    result["wan_clip_vs_frame_miss"] = round(ratio, 2)
    print(f"Wan VAE: the reference's clip encoding costs {ratio:.1f}x the frame encoding per episode", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
