"""From the flywheel config to a Cosmos Policy model: layout per suite, size preset, local pretrained weights
(Cosmos-Predict2 transformer, Wan VAE, T5), normalisation statistics from the lake's demonstrations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cosmos_policy.checkpoint_io import save_checkpoint
from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig, MixName, get_config
from cosmos_policy.configuration_cosmos_policy import TrainConfig as CosmosTrainConfig
from cosmos_policy.latent_layout import LatentLayout, libero_layout, robocasa_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel, pretrained_config
from cosmos_policy.normalization import NormalizationStats
from flywheel.config import FlywheelConfig
from flywheel.episodes import CachedLatents, cache_latents
from sims.scene import GOAL_STATE_DIM
from storage_schemas.layout import LakeLayout

#: Image size (pixels) per preset; latents are 1/8 of it.
PRESET_IMAGE_SIZE = {"tiny": 64, "2b": 224}


class ModelSetupError(ValueError):
    """The model cannot be set up from this config and lake (message says what to run)."""


def layout_for_suite(suite: str, preset: str, chunk_size: int, object_state: bool = False) -> LatentLayout:
    """LIBERO suites → 2 cameras (9 frames); RoboCasa → 3 cameras (11 frames). ``object_state`` adds the privileged
    object-state frame (LIBERO's fixed-size goal state, :data:`sims.scene.GOAL_STATE_DIM` floats)."""
    hw = PRESET_IMAGE_SIZE[preset] // 8
    if suite.startswith("libero"):
        return libero_layout(latent_hw=hw, chunk_size=chunk_size, object_state_dim=GOAL_STATE_DIM if object_state else 0)
    if suite.startswith("robocasa"):
        if object_state:
            raise ModelSetupError(f"model.object_state needs a LIBERO suite: {suite!r} records no object state")
        return robocasa_layout(latent_hw=hw, chunk_size=chunk_size)
    raise ModelSetupError(f"no model layout for suite {suite!r} (libero_* or robocasa*)")


def _preset_config(cfg: FlywheelConfig, suite: str) -> CosmosPolicyConfig:
    base = get_config(cfg.model.preset, layout_for_suite(suite, cfg.model.preset, cfg.model.chunk_size,
                                                         cfg.model.object_state))
    return replace(base, tokenizer=replace(base.tokenizer, wan_encoding=cfg.model.wan_encoding))


def model_config(cfg: FlywheelConfig, suite: str) -> CosmosPolicyConfig:
    """The model config for ``suite``: preset shape, or the shape of ``model.weights_path`` when given, with the
    Wan VAE / T5 from ``model.vae_path`` / ``model.t5_path`` (or the weights folder's ``vae/`` and
    ``text_encoder/``)."""
    m = cfg.model
    return pretrained_config(_preset_config(cfg, suite), m.weights_path, m.vae_path, m.t5_path)


def component_paths(cfg: FlywheelConfig) -> dict[str, Path | None]:
    """Where this machine keeps the pretrained tokenizer and text encoder, as ``load_checkpoint`` /
    ``CosmosPolicy.from_checkpoint`` keyword arguments: ``model.vae_path`` / ``model.t5_path``, else the
    ``model.weights_path`` pipeline folder (its ``vae/``, ``text_encoder/``). A checkpoint takes the one whose
    fingerprint matches what it was trained with."""
    m = cfg.model
    return {"vae_path": m.vae_path or m.weights_path, "t5_path": m.t5_path or m.weights_path}


def build_model(cfg: FlywheelConfig, suite: str, seed: int = 0) -> CosmosPolicyModel:
    """Pretrained weights when ``model.weights_path`` is set, else a randomly initialised preset."""
    import torch

    m = cfg.model
    if m.weights_path is not None:
        return CosmosPolicyModel.from_pretrained(_preset_config(cfg, suite), m.weights_path, m.vae_path, m.t5_path)
    torch.manual_seed(seed)
    return CosmosPolicyModel(model_config(cfg, suite))


def suite_stats(lake: LakeLayout, suite: str) -> NormalizationStats:
    """Demonstration min/max of ``suite`` (written by ingestion and demo generation)."""
    path = lake.stats_path(suite)
    if not path.exists():
        raise ModelSetupError(f"no normalisation statistics for {suite!r} at {path}: add demonstrations first "
                              f"(flywheel demos generate --suite {suite}, or flywheel ingest)")
    import json

    return NormalizationStats.from_dict(json.loads(path.read_text()))


def cache_suite_latents(cfg: FlywheelConfig, lake: LakeLayout, cache_root: str | Path, suite: str,
                        where: str = "true", limit: int | None = None, progress: bool = True) -> CachedLatents:
    """Encode (once) the images of every episode of ``suite`` with the configured model's tokenizer."""
    from cosmos_policy.tokenizer import build_tokenizer

    mcfg = model_config(cfg, suite)
    quoted = suite.replace("'", "''")
    return cache_latents(lake, build_tokenizer(mcfg.tokenizer), cache_root, mcfg.layout.camera_names,
                         where=f"suite = '{quoted}' AND ({where})", limit=limit, progress=progress,
                         latent_layout=mcfg.layout)


def init_checkpoint(cfg: FlywheelConfig, lake: LakeLayout, suite: str, out: str | Path, seed: int = 0) -> Path:
    """Write the starting checkpoint of fine-tuning: the model of :func:`build_model` with the suite's stats."""
    model = build_model(cfg, suite, seed)
    stats = suite_stats(lake, suite)
    need = model.layout.object_state_dim
    have = None if stats.object_state is None else len(stats.object_state.min)
    if need and have != need:
        raise ModelSetupError(
            f"model.object_state needs the demos' goal object state ({need} floats per step) but the lake's "
            f"{suite} demonstrations have {'none' if have is None else f'{have} floats'}: record demos with "
            f"sim.object_state=goal (the default) and LIBERO, e.g. flywheel demos generate --suite {suite}")
    return save_checkpoint(out, model, stats,
                           extra={"suite": suite, "init": str(cfg.model.weights_path or f"random:{seed}")})


def training_config(cfg: FlywheelConfig, base: CosmosTrainConfig, mix: MixName = "base") -> CosmosTrainConfig:
    """The training hyperparameters a run uses: the model preset's recipe (``base``) with the flywheel config's
    ``train`` overrides, and for ``mix="refine"`` the ``refine`` overrides on top. Recorded in the checkpoint."""
    t = cfg.train
    fields = ("steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr_ratio", "weight_decay",
              "grad_clip", "fractions", "bf16_autocast", "augment_shift", "loss_normalization")
    resolved = replace(base, **{f: getattr(t, f) for f in fields if getattr(t, f) is not None})
    if mix == "refine":
        r = cfg.refine
        over = {"steps": r.steps, "lr": r.lr, "refine_rollout_fraction": r.rollout_fraction,
                "balance_outcomes": r.balance_outcomes}
        resolved = replace(resolved, **{k: v for k, v in over.items() if v is not None})
    if resolved.batch_size % cfg.train.num_workers:
        raise ModelSetupError(f"train.batch_size {resolved.batch_size} is not divisible by train.num_workers "
                              f"{cfg.train.num_workers}")
    return resolved

