"""Training step as a function: batch in → loss and metrics out (SPEC §3.5), plus the optimiser factory."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from cosmos_policy.augmentation import random_shift
from cosmos_policy.configuration_cosmos_policy import TrainConfig
from cosmos_policy.latent_layout import SAMPLE_TYPES, decode_value, extract
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.noise_schedule import num_frames_shift, sample_hybrid_sigmas
from cosmos_policy.samples import TrainingBatch


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (lr 1e-4, betas (0.9, 0.99), weight decay 0.1 by default); no decay on biases / norm gains."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, config: TrainConfig, total_steps: int) -> float:
    """Multiplier of ``config.lr`` at optimiser step ``step`` (0-based) of a ``total_steps`` run."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    span = max(total_steps - config.warmup_steps - 1, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                      total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor`; call ``.step()`` after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, total_steps))


def compute_loss(model: CosmosPolicyModel, batch: TrainingBatch, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and metrics of one batch (no parameter update).

    Args:
        model: the model (its ``config.noise`` sets the σ distribution).
        batch: :class:`~cosmos_policy.samples.TrainingBatch` on the model's device.
        generator: RNG for σ and noise (on the model's device).

    Returns:
        ``(loss, metrics)``; metrics: ``loss``, ``loss/<type>``, ``action_l1`` (normalised units, policy samples,
        after extraction), ``value_mae`` ([0, 1] units, all samples), ``future_mse`` (future frames of policy and
        world-model samples), ``sigma_mean``.
    """
    cfg = model.config.noise
    lay = model.layout
    b = len(batch)
    device = batch.latents.device
    scale = num_frames_shift(lay.num_frames) if cfg.scale_by_num_frames else 1.0
    sigma, _ = sample_hybrid_sigmas(b, p_mean=cfg.p_mean, p_std=cfg.p_std, uniform_prob=cfg.uniform_prob,
                                    uniform_low=cfg.uniform_low, uniform_high=cfg.uniform_high, scale=scale,
                                    sigma_min=cfg.sigma_train_min, sigma_max=cfg.sigma_train_max,
                                    generator=generator, device=device)
    noise = torch.randn(batch.latents.shape, generator=generator, device=device)
    text = batch.text if batch.text is not None else model.encode_text(batch.instructions)
    use_autocast = model.config.train.bf16_autocast and device.type == "cuda"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
        per_sample, denoised = model.denoiser.loss(model.value_view(batch.latents, batch.cond_mask), batch.cond_mask,
                                                   text, sigma, noise)
    if model.config.train.loss_normalization == "all":  # one mean over every element: weigh by generated share
        per_sample = per_sample * (~batch.cond_mask).float().mean(1)
    loss = per_sample.mean()
    metrics = {"loss": loss.item(), "sigma_mean": sigma.mean().item()}
    with torch.no_grad():
        for i, name in enumerate(SAMPLE_TYPES):
            sel = batch.sample_type == i
            if sel.any():
                metrics[f"loss/{name}"] = per_sample[sel].mean().item()
        policy = batch.sample_type == 0
        if policy.any():
            pred = extract(denoised[policy][:, :, lay.action_index], lay.action_numel)
            metrics["action_l1"] = (pred - batch.actions[policy].reshape(pred.shape)).abs().mean().item()
        value_pred = decode_value(denoised[:, :, lay.value_index])
        metrics["value_mae"] = (value_pred - (batch.values + 1) / 2).abs().mean().item()
        gen_future = batch.sample_type <= 1
        if gen_future.any():
            fut = list(lay.future_indices)
            diff = denoised[gen_future][:, :, fut] - batch.latents[gen_future][:, :, fut]
            metrics["future_mse"] = diff.pow(2).mean().item()
    return loss, metrics


class TrainingLoss(torch.nn.Module):
    """:func:`compute_loss` as a module, so a data-parallel wrapper (``DistributedDataParallel``) can own the
    forward pass: ``forward(batch, generator) -> (loss, metrics)``."""

    def __init__(self, model: CosmosPolicyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: TrainingBatch, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        return compute_loss(self.model, batch, generator)


def train_step(model: CosmosPolicyModel, optimizer: torch.optim.Optimizer, batch: TrainingBatch,
               generator: torch.Generator | None = None, grad_clip: float | None = None,
               loss_module: torch.nn.Module | None = None) -> dict[str, float]:
    """One optimisation step: augmentation (``config.train.augment_shift``), loss, backward, gradient clipping
    (1.0), AdamW update.

    Args:
        loss_module: computes ``(loss, metrics)`` instead of :func:`compute_loss`, e.g. a
            ``DistributedDataParallel`` around :class:`TrainingLoss` (gradients are then averaged across ranks).

    Returns:
        metrics of :func:`compute_loss` plus ``grad_norm``.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    shift = model.config.train.augment_shift
    if shift:
        batch = replace(batch, latents=random_shift(batch.latents, model.layout, shift, generator))
    loss, metrics = loss_module(batch, generator) if loss_module is not None else compute_loss(model, batch, generator)
    loss.backward()
    clip = grad_clip if grad_clip is not None else model.config.train.grad_clip
    metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    optimizer.step()
    return metrics
