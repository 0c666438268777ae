"""Latent caching task: after demos and rollouts land, their images are encoded once for training."""

from __future__ import annotations

from prefect import task

from flywheel.config import FlywheelConfig
from flywheel.model_setup import cache_suite_latents
from flywheel.workspace import Workspace


def cache_latents_for_suite(cfg: FlywheelConfig, ws: Workspace, suite: str) -> dict:
    """Encode every not-yet-cached episode of ``suite``; returns counts for the flow's summary."""
    result = cache_suite_latents(cfg, ws.lake, ws.latent_cache, suite, progress=False)
    print(f"latents {suite}: {result.misses} encoded, {result.hits} cached ({result.fingerprint})")
    return {"suite": suite, "episodes": len(result.episode_ids), "encoded": result.misses, "cached": result.hits,
            "tokenizer": result.fingerprint}


latents_task = task(cache_latents_for_suite, name="cache-latents", persist_result=False)
