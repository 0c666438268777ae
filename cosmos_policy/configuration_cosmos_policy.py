"""Typed configuration of the Cosmos Policy model, with size presets ``tiny`` (CPU, tests) and ``2b``.

Every config is a dataclass with defaults; ``__post_init__`` rejects bad values and names them. A full
:class:`CosmosPolicyConfig` round-trips through JSON (``to_dict`` / ``from_dict``) and is saved with every
checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from cosmos_policy.latent_layout import LatentLayout, libero_layout


def config_folder(path: str | Path, subfolder: str, what: str) -> Path:
    """The folder holding a local model's ``config.json``: ``path`` itself, or ``path/subfolder`` (the layout of a
    diffusers pipeline folder). Raises ``FileNotFoundError`` naming ``what`` when neither has one."""
    folder = Path(path)
    if (folder / subfolder / "config.json").exists():
        return folder / subfolder
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no {what} config.json under {path} (nor a {subfolder}/ subfolder)")
    return folder


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {getattr(obj, name)!r}")


@dataclass
class BackboneConfig:
    """Shape of diffusers' ``CosmosTransformer3DModel``.

    The wrapper concatenates ``[latents, condition mask, (zero) padding mask]`` itself, so the transformer is
    built with ``concat_padding_mask=False`` and ``in_channels = latent_channels + 1 + padding_mask_channel``.
    Parameter names and shapes equal those of the upstream 2B checkpoint (``in_channels=17``,
    ``concat_padding_mask=True``), and torchvision's resize is never reached.
    """

    latent_channels: int = 16
    num_layers: int = 28
    num_attention_heads: int = 16
    attention_head_dim: int = 128
    mlp_ratio: float = 4.0
    text_embed_dim: int = 1024
    adaln_lora_dim: int = 256
    max_size: tuple[int, int, int] = (128, 240, 240)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0)
    padding_mask_channel: bool = True
    extra_pos_embed_type: str | None = None
    fps: int | None = 16
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.max_size = tuple(self.max_size)
        self.patch_size = tuple(self.patch_size)
        self.rope_scale = tuple(self.rope_scale)
        _check_positive(self, "latent_channels", "num_layers", "num_attention_heads", "attention_head_dim",
                        "mlp_ratio", "text_embed_dim", "adaln_lora_dim")
        if self.patch_size[0] != 1:
            raise ValueError(f"per-frame timesteps need temporal patch size 1, got patch_size={self.patch_size}")
        _check_choice("extra_pos_embed_type", self.extra_pos_embed_type, (None, "learnable"))

    @property
    def in_channels(self) -> int:
        return self.latent_channels + 1 + int(self.padding_mask_channel)

    def transformer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``CosmosTransformer3DModel(**kwargs)``."""
        return dict(in_channels=self.in_channels, out_channels=self.latent_channels,
                    num_attention_heads=self.num_attention_heads, attention_head_dim=self.attention_head_dim,
                    num_layers=self.num_layers, mlp_ratio=self.mlp_ratio, text_embed_dim=self.text_embed_dim,
                    adaln_lora_dim=self.adaln_lora_dim, max_size=self.max_size, patch_size=self.patch_size,
                    rope_scale=self.rope_scale, concat_padding_mask=False,
                    extra_pos_embed_type=self.extra_pos_embed_type)


@dataclass
class NoiseConfig:
    """EDM / rectified-flow preconditioning and the hybrid training σ distribution (SPEC §3.5).

    Attributes:
        preconditioning: ``"rectified_flow"`` (Cosmos-Predict2; ``c_skip = c_in = 1 - t``, ``c_out = -t``) or
            ``"edm"`` (Karras et al.; ``c_skip = 1/(σ²+1)``, ``c_out = σ/√(σ²+1)``). Both with σ_data = 1. At
            σ_min = 4 rectified flow asks the network to pass the input noise through almost unchanged, which a
            tiny network (hidden 128 < 256 values per 4x4 patch) cannot; EDM asks for a quarter of it.
        p_mean, p_std: log-normal draw ``ln σ ~ N(p_mean, p_std)`` (Cosmos-Predict2: ln 4, 1.2).
        uniform_prob: share of draws from ``U[uniform_low, uniform_high]`` (0.3).
        scale_by_num_frames: multiply the draw by ``sqrt(T')`` (resolution/length shift).
        sigma_train_min, sigma_train_max: clamp of training σ after scaling.
        timestep_scale: network timestep = ``scale * σ / (1 + σ)`` (Cosmos-Predict2 uses 1.0; the tiny preset
            spreads it over the sinusoidal embedding with 1000).
        loss_scale: multiplier of the loss (10).
    """

    sigma_data: float = 1.0
    preconditioning: Literal["rectified_flow", "edm"] = "rectified_flow"
    p_mean: float = math.log(4.0)
    p_std: float = 1.2
    uniform_prob: float = 0.3
    uniform_low: float = 1.0
    uniform_high: float = 85.0
    scale_by_num_frames: bool = True
    sigma_train_min: float = 0.01
    sigma_train_max: float = 400.0
    timestep_scale: float = 1.0
    loss_scale: float = 10.0

    def __post_init__(self) -> None:
        if abs(self.sigma_data - 1.0) > 1e-9:
            raise ValueError(f"preconditioning is implemented for sigma_data=1, got {self.sigma_data}")
        _check_choice("preconditioning", self.preconditioning, ("rectified_flow", "edm"))
        if not 0.0 <= self.uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {self.uniform_prob}")
        if not 0 < self.uniform_low < self.uniform_high:
            raise ValueError(f"need 0 < uniform_low < uniform_high, got {self.uniform_low}, {self.uniform_high}")
        _check_positive(self, "p_std", "sigma_train_min", "sigma_train_max", "timestep_scale", "loss_scale")


@dataclass
class SamplerConfig:
    """Karras schedule and solver (SPEC §3.6): ``num_steps`` solver steps from σ_max to σ_min, then one clean
    denoiser call at σ_min (``num_steps + 1`` network calls)."""

    sigma_max: float = 80.0
    sigma_min: float = 4.0
    rho: float = 7.0
    num_steps: int = 5
    solver: Literal["dpmpp_2m", "heun", "euler"] = "dpmpp_2m"

    def __post_init__(self) -> None:
        _check_positive(self, "sigma_min", "rho", "num_steps")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {self.sigma_max} <= {self.sigma_min}")
        _check_choice("solver", self.solver, ("dpmpp_2m", "heun", "euler"))


@dataclass
class PlannerConfig:
    """Best-of-N planning (SPEC §3.6).

    Attributes:
        num_candidates: N action chunks per observation.
        num_world_samples: future-state samples per candidate.
        num_value_samples: value samples per predicted future.
        success_threshold: a value above it counts as predicted success.
        minority_score: score when fewer than half the estimates are successes: ``"failure_mean"`` (mean of
            the failure estimates, keeps an order among failing candidates) or ``"zero"``.
        mode: ``"model_based"`` (V(s') after world-model samples) or ``"q"`` (model-free Q(s, a): value read
            from ``num_world_samples * num_value_samples`` world-model-conditioned samples, no future pass).
        max_batch_size: rows per denoiser forward; larger planning batches are split.
        world_model_steps, value_steps: solver steps of the world-model and value stages (``None``: the model's
            ``sampler.num_steps``, which the candidates' action stage always uses). ``0`` is one network call at
            σ_max returning the clean estimate: the reference's LIBERO planning setting (one denoising step each).
    """

    num_candidates: int = 8
    num_world_samples: int = 3
    num_value_samples: int = 5
    success_threshold: float = 0.05
    minority_score: Literal["failure_mean", "zero"] = "failure_mean"
    mode: Literal["model_based", "q"] = "model_based"
    max_batch_size: int = 256
    world_model_steps: int | None = None
    value_steps: int | None = None

    def __post_init__(self) -> None:
        _check_positive(self, "num_candidates", "num_world_samples", "num_value_samples", "max_batch_size")
        for name in ("world_model_steps", "value_steps"):
            steps = getattr(self, name)
            if steps is not None and steps < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {steps}")
        _check_choice("minority_score", self.minority_score, ("failure_mean", "zero"))
        _check_choice("mode", self.mode, ("model_based", "q"))


MixName = Literal["base", "refine"]


@dataclass
class TrainConfig:
    """Optimiser, learning-rate schedule, length and batch composition of a training run (SPEC §3.3, §3.5).

    This is the one definition of the training hyperparameters: a size preset carries its recipe here, the
    flywheel config only overrides fields, and the values a run actually used are saved in its checkpoint.

    Attributes:
        steps: optimiser steps of a base fine-tuning run (a refinement run's length is set by the caller).
        fractions: (policy, world_model, value) shares of a base fine-tuning batch (50/25/25).
        refine_rollout_fraction: share of a refinement batch drawn from rollouts as world-model/value samples; the
            rest are demo policy samples (the 90/10 split).
        balance_outcomes: draw refinement rollout samples half from successes, half from failures (reference);
            ``False`` draws them uniformly.
        lr_schedule: linear warm-up over ``warmup_steps`` then ``"constant"`` (SPEC default) or ``"cosine"``
            decay to ``min_lr_ratio * lr`` at the run's last step (helps short runs settle).
        augment_shift: random shift of the camera latents in training, in latent pixels per axis (8 image pixels
            each); ``0`` disables it (:mod:`cosmos_policy.augmentation`).
        loss_normalization: ``"all"`` (the reference, the default): one mean over every latent element of the
            batch, conditioning elements counting as zero, so a sample weighs by the share of frames it generates;
            ``"generated"``: each sample's squared error is averaged over its generated elements, so every sample
            weighs the same (a value sample, one generated frame, as much as a policy sample that generates several).
            Measured on a 2-core CPU (docs/learning.md): ``"all"`` equal or better on every figure.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    batch_size: int = 32
    steps: int = 40000
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25)
    refine_rollout_fraction: float = 0.9
    balance_outcomes: bool = True
    bf16_autocast: bool = True
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    augment_shift: float = 0.0
    loss_normalization: Literal["generated", "all"] = "all"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.fractions = tuple(self.fractions)
        _check_positive(self, "lr", "grad_clip", "batch_size", "steps")
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _check_choice("loss_normalization", self.loss_normalization, ("generated", "all"))
        if self.augment_shift < 0:
            raise ValueError(f"augment_shift must be >= 0, got {self.augment_shift}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"warmup_steps must be >= 0 and min_lr_ratio in [0, 1], got {self.warmup_steps} and "
                             f"{self.min_lr_ratio}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions (policy, world_model, value) must be 3 non-negative numbers summing to 1, "
                             f"got {self.fractions}")
        if not 0.0 <= self.refine_rollout_fraction <= 1.0:
            raise ValueError(f"refine_rollout_fraction must be in [0, 1], got {self.refine_rollout_fraction}")

    def mix_fractions(self, mix: MixName) -> tuple[float, float, float]:
        """(policy, world_model, value) shares of a batch: ``base`` = :attr:`fractions`; ``refine`` = the rollout
        share split evenly between world-model and value samples, the rest policy samples from demos."""
        _check_choice("mix", mix, ("base", "refine"))
        if mix == "base":
            return self.fractions
        r = self.refine_rollout_fraction
        return (1.0 - r, r / 2, r / 2)


@dataclass
class TokenizerConfig:
    """Image tokenizer: ``"wan"`` (AutoencoderKLWan from ``path``) or the ``"pixel_shuffle"`` stand-in.

    ``wan_encoding`` (Wan only): ``"clip"`` (the reference's) encodes each sample as one causal video clip laid out
    like the latent frames: the blank slot is one black frame (encoded alone, as the VAE does with a clip's first
    frame), every other slot 4 pixel frames (the VAE's temporal compression): a camera slot its image repeated, a
    proprio/action/value slot black frames that injection later overwrites; a slot's latent therefore depends on
    the slots before it. ``"frame"`` encodes each image alone as a one-frame video and leaves the blank slot zero
    (how checkpoints saved before this option were trained).
    """

    kind: Literal["pixel_shuffle", "wan"] = "pixel_shuffle"
    path: str | None = None
    image_size: int = 64
    latent_channels: int = 16
    seed: int = 0
    wan_encoding: Literal["clip", "frame"] = "clip"

    def __post_init__(self) -> None:
        _check_choice("tokenizer kind", self.kind, ("pixel_shuffle", "wan"))
        _check_choice("wan_encoding", self.wan_encoding, ("clip", "frame"))
        if self.kind == "wan" and not self.path:
            raise ValueError("tokenizer kind 'wan' needs a local weights folder in TokenizerConfig.path")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")

    @property
    def latent_size(self) -> int:
        return self.image_size // 8


@dataclass
class TextConfig:
    """Text conditioning: T5 encoder from ``t5_path`` when given, else a fixed per-instruction embedding."""

    t5_path: str | None = None
    num_tokens: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "num_tokens")


VALUE_INPUTS = ("state_action_future", "future")


@dataclass
class CosmosPolicyConfig:
    """Top-level model config: everything a checkpoint needs to rebuild the model."""

    layout: LatentLayout = field(default_factory=libero_layout)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    preset: str = "custom"
    # What value samples see: the current state, action and future state, V(s, a, s′) (``"state_action_future"``),
    # or the future state alone, V(s′) (``"future"``; the reference's planning models, whose current-state and action
    # frames are masked out of value prediction).
    value_inputs: str = "state_action_future"

    def __post_init__(self) -> None:
        if self.value_inputs not in VALUE_INPUTS:
            raise ValueError(f"value_inputs must be one of {VALUE_INPUTS}, got {self.value_inputs!r}")
        if self.layout.latent_channels != self.backbone.latent_channels:
            raise ValueError(f"layout latent_channels {self.layout.latent_channels} != backbone latent_channels "
                             f"{self.backbone.latent_channels}")
        if self.tokenizer.latent_channels != self.layout.latent_channels:
            raise ValueError(f"tokenizer latent_channels {self.tokenizer.latent_channels} != layout "
                             f"{self.layout.latent_channels}")
        if (self.layout.latent_height, self.layout.latent_width) != (self.tokenizer.latent_size,) * 2:
            raise ValueError(f"layout latent size {(self.layout.latent_height, self.layout.latent_width)} does not "
                             f"match tokenizer image_size {self.tokenizer.image_size} // 8")
        ph, pw = self.backbone.patch_size[1:]
        if self.layout.latent_height % ph or self.layout.latent_width % pw:
            raise ValueError(f"latent size {(self.layout.latent_height, self.layout.latent_width)} not divisible by "
                             f"patch {self.backbone.patch_size}")
        if self.layout.num_frames > self.backbone.max_size[0]:
            raise ValueError(f"{self.layout.num_frames} frames exceed backbone max_size {self.backbone.max_size}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset, "layout": self.layout.to_dict(), "value_inputs": self.value_inputs}
        for f in fields(self):
            if f.name not in ("layout", "preset", "value_inputs"):
                out[f.name] = asdict(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CosmosPolicyConfig:
        types = {"backbone": BackboneConfig, "noise": NoiseConfig, "sampler": SamplerConfig,
                 "planner": PlannerConfig, "train": TrainConfig, "tokenizer": TokenizerConfig, "text": TextConfig}
        data = dict(data)
        tok = data.get("tokenizer") or {}
        if tok.get("kind") == "wan" and "wan_encoding" not in tok:  # a Wan model saved before the option: frames
            data["tokenizer"] = {**data["tokenizer"], "wan_encoding": "frame"}
        kwargs: dict[str, Any] = {k: t(**data[k]) for k, t in types.items() if k in data}
        return cls(layout=LatentLayout.from_dict(data["layout"]), preset=data.get("preset", "custom"),
                   value_inputs=data.get("value_inputs", "state_action_future"), **kwargs)


def tiny_config(layout: LatentLayout | None = None, **overrides: Any) -> CosmosPolicyConfig:
    """CPU/test preset: 4 layers, 4 heads x 32, 64x64 images → 8x8 latents, ~1.3M parameters."""
    layout = layout or libero_layout(latent_hw=8)
    cfg = CosmosPolicyConfig(
        layout=layout,
        backbone=BackboneConfig(num_layers=4, num_attention_heads=4, attention_head_dim=32, text_embed_dim=64,
                                adaln_lora_dim=32, mlp_ratio=2.0, max_size=(32, 64, 64), patch_size=(1, 4, 4),
                                rope_scale=(1.0, 1.0, 1.0),
                                padding_mask_channel=False, fps=None),
        noise=NoiseConfig(preconditioning="edm", timestep_scale=1000.0),
        # The recipe that learned LIBERO-Object task 0 on a CPU (issue notes): lr 5e-4, warm-up, cosine decay.
        train=TrainConfig(lr=5e-4, batch_size=16, steps=12000, bf16_autocast=False, lr_schedule="cosine",
                          warmup_steps=200, min_lr_ratio=0.05),
        tokenizer=TokenizerConfig(image_size=layout.latent_height * 8),
        text=TextConfig(num_tokens=8),
        preset="tiny",
    )
    return replace(cfg, **overrides) if overrides else cfg


def cosmos_2b_config(layout: LatentLayout | None = None, **overrides: Any) -> CosmosPolicyConfig:
    """Cosmos-Predict2 2B (28 layers, 16 heads x 128, text 1024, patch (1,2,2)); 224 px → 28x28 latents."""
    layout = layout or libero_layout(latent_hw=28)
    cfg = CosmosPolicyConfig(layout=layout, backbone=BackboneConfig(),
                             tokenizer=TokenizerConfig(image_size=layout.latent_height * 8),
                             text=TextConfig(num_tokens=512), preset="2b")
    return replace(cfg, **overrides) if overrides else cfg


PRESETS = {"tiny": tiny_config, "2b": cosmos_2b_config}


def get_config(preset: str, layout: LatentLayout | None = None, **overrides: Any) -> CosmosPolicyConfig:
    """Config from a size preset (``tiny`` or ``2b``) and a layout."""
    if preset not in PRESETS:
        raise ValueError(f"unknown size preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset](layout, **overrides)
