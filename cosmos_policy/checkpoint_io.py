"""Checkpoints: ``model.safetensors`` (weights) + ``cosmos_policy.json`` (config, normalisation stats, layout,
format version). Loading refuses a checkpoint whose layout differs from the one the caller expects.

Folder::

    <dir>/model.safetensors     # transformer weights (diffusers parameter names)
    <dir>/cosmos_policy.json    # {"format_version", "package_version", "config", "layout", "normalization",
                                #  "components", "extra"}
    <dir>/vae/, text_encoder/   # optional copies of the pretrained tokenizer / text encoder

``components`` names the tokenizer and text encoder by kind and content fingerprint
(:mod:`cosmos_policy.components`); loading finds them by fingerprint, so a copied folder loads anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cosmos_policy.components import check_stand_ins, component_records, resolve_components
from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig
from cosmos_policy.latent_layout import LatentLayout, layout_mismatch
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import NormalizationStats

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "cosmos_policy.json"


class LayoutMismatchError(ValueError):
    """The checkpoint was trained with another latent layout."""


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(directory: str | Path, model: CosmosPolicyModel, stats: NormalizationStats,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write weights and metadata (atomic per file). Returns the folder."""
    from safetensors.torch import save_file

    from cosmos_policy import __version__

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.transformer.state_dict().items()}
    _atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
    meta = {"format_version": FORMAT_VERSION, "package_version": __version__, "config": model.config.to_dict(),
            "layout": model.layout.to_dict(), "normalization": stats.to_dict(),
            "components": component_records(model.config), "extra": extra or {}}
    _atomic_write(folder / META_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return folder


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint folder."""
    path = Path(directory) / META_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a cosmos_policy checkpoint folder")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint format_version {meta.get('format_version')} != supported {FORMAT_VERSION}")
    return meta


def with_components(config: CosmosPolicyConfig, meta: dict[str, Any], directory: str | Path,
                    vae_path: str | Path | None = None, t5_path: str | Path | None = None) -> CosmosPolicyConfig:
    """``config`` with the tokenizer / text-encoder folders this machine holds for the checkpoint's recorded
    fingerprints (raises ``ComponentError``; see :mod:`cosmos_policy.components`)."""
    check_stand_ins(config, meta.get("components"))
    return resolve_components(config, meta.get("components"), directory, vae_path, t5_path)


def load_checkpoint(directory: str | Path, expected_layout: LatentLayout | None = None,
                    device: torch.device | str = "cpu", config_overrides: dict[str, Any] | None = None,
                    vae_path: str | Path | None = None, t5_path: str | Path | None = None,
                    ) -> tuple[CosmosPolicyModel, NormalizationStats]:
    """Rebuild the model and its normalisation statistics.

    Args:
        directory: checkpoint folder.
        expected_layout: when given, a different saved layout raises :class:`LayoutMismatchError`.
        device: where to put the model.
        config_overrides: sub-configs to replace at load time (e.g. ``{"planner": PlannerConfig(...)}``);
            inference settings are arguments, not new checkpoints.
        vae_path, t5_path: where this machine keeps the pretrained tokenizer / text encoder (tried first; see
            :func:`cosmos_policy.components.resolve_components`). Raises ``ComponentError`` when the recorded
            fingerprint is found nowhere.
    """
    from dataclasses import replace

    from safetensors.torch import load_file

    meta = read_metadata(directory)
    config = CosmosPolicyConfig.from_dict(meta["config"])
    saved_layout = LatentLayout.from_dict(meta["layout"])
    if layout_mismatch(saved_layout, config.layout):
        raise LayoutMismatchError(f"corrupt checkpoint {directory}: layout and config.layout disagree")
    if expected_layout is not None:
        diffs = layout_mismatch(expected_layout, saved_layout)
        if diffs:
            raise LayoutMismatchError(
                f"checkpoint {directory} was trained with layout {saved_layout.name!r} "
                f"[{saved_layout.describe()}], expected {expected_layout.name!r} "
                f"[{expected_layout.describe()}]; differences: {'; '.join(diffs)}")
    config = with_components(config, meta, directory, vae_path, t5_path)
    if config_overrides:
        config = replace(config, **config_overrides)
    model = CosmosPolicyModel(config, device="meta")
    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    model.transformer.load_state_dict(state, strict=True, assign=True)
    model = model.to(device)
    model.eval()
    return model, NormalizationStats.from_dict(meta["normalization"])


def save_untrained_checkpoint(directory: str | Path, layout: LatentLayout, preset: str = "tiny", seed: int = 0) -> Path:
    """A randomly initialised checkpoint (placeholder normalisation in [-1, 1]) for smoke runs and benchmarks.

    It is a real, loadable checkpoint of an *untrained* model: it exercises the whole rollout path but is not
    expected to succeed at any task.
    """
    import numpy as np

    from cosmos_policy.configuration_cosmos_policy import get_config
    from cosmos_policy.normalization import compute_stats

    torch.manual_seed(seed)
    model = CosmosPolicyModel(get_config(preset, layout))
    rng = np.random.default_rng(seed)
    obj = [rng.uniform(-1, 1, (64, layout.object_state_dim))] if layout.object_state_dim else None
    stats = compute_stats([rng.uniform(-1, 1, (64, layout.proprio_dim))], [rng.uniform(-1, 1, (64, layout.action_dim))],
                          obj)
    return save_checkpoint(directory, model, stats)
