"""Noise schedules, σ samplers and EDM / rectified-flow preconditioning as pure functions (k-diffusion style).

Conventions: a noisy sample is ``x_σ = x_0 + σ·n`` (EDM). With σ_data = 1, rectified-flow scaling (as in
Cosmos-Predict2) uses ``t = σ / (1 + σ)`` and ``x_t = (1 - t)·x_0 + t·n = x_σ / (1 + σ)``.
"""

from __future__ import annotations

import math

import torch


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      append_zero: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """Karras et al. (2022) noise levels, eq. (5): ``(σ_max^{1/ρ} + i/(n-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``.

    Args:
        n: number of noise levels from σ_max down to σ_min (inclusive).
        sigma_min, sigma_max: end points.
        rho: schedule curvature (7).
        append_zero: append a final 0 (the step that returns the clean estimate).

    Returns:
        ``(n,)`` or ``(n + 1,)`` float32 decreasing σ.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=torch.float32)


def sampling_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Inference grid of SPEC §3.6: ``num_steps`` intervals from σ_max to σ_min, then 0.

    The last interval (σ_min → 0) makes the sampler return the denoiser's clean estimate at σ_min, i.e. the
    "one clean call at σ_min". Network calls: ``num_steps + 1``.

    Returns:
        ``(num_steps + 2,)`` σ.
    """
    return get_sigmas_karras(num_steps + 1, sigma_min, sigma_max, rho, append_zero=True, device=device)


def sample_hybrid_sigmas(batch_size: int, *, p_mean: float, p_std: float, uniform_prob: float,
                         uniform_low: float, uniform_high: float, scale: float = 1.0,
                         sigma_min: float = 0.0, sigma_max: float = float("inf"),
                         generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Hybrid training σ (Cosmos Policy §3.5): log-normal with p = 1 - uniform_prob, else uniform.

    ``ln σ ~ N(p_mean, p_std²)`` (EDM, Karras et al. 2022) mixed with ``σ ~ U[uniform_low, uniform_high]``;
    the draw is then multiplied by ``scale`` (√T' shift) and clamped.

    Returns:
        ``(sigmas (B,), from_uniform (B,) bool)``.
    """
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(batch_size, generator=generator, device=gen_device)
    z = torch.randn(batch_size, generator=generator, device=gen_device)
    v = torch.rand(batch_size, generator=generator, device=gen_device)
    from_uniform = u < uniform_prob
    lognormal = torch.exp(p_mean + p_std * z)
    uniform = uniform_low + (uniform_high - uniform_low) * v
    sigmas = torch.where(from_uniform, uniform, lognormal) * scale
    return sigmas.clamp(sigma_min, sigma_max).to(device), from_uniform.to(device)


def rectified_flow_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified-flow preconditioning with σ_data = 1 (Cosmos-Predict2): ``t = σ / (1 + σ)``.

    ``D(x_σ) = c_skip·x_σ + c_out·F(c_in·x_σ, c_noise)`` with ``c_skip = c_in = 1 - t``, ``c_out = -t``,
    ``c_noise = t``; F predicts the velocity ``n - x_0``.

    Returns:
        ``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma``.
    """
    t = sigma / (1.0 + sigma)
    return 1.0 - t, -t, 1.0 - t, t


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1): ``(c_skip, c_out, c_in, c_noise)``.

    ``c_noise`` is returned as ``t = σ / (1 + σ)`` like :func:`rectified_flow_scalings`, so the network's
    timestep input means the same under both preconditionings and 0 marks clean frames.
    """
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / s2.sqrt(), 1.0 / s2.sqrt(), sigma / (1.0 + sigma)


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """EDM weight ``λ(σ) = (σ² + σ_data²) / (σ·σ_data)²`` (Karras et al. 2022, eq. 8)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def scalings(preconditioning: str, sigma: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` for ``"rectified_flow"`` or ``"edm"``."""
    if preconditioning == "rectified_flow":
        return rectified_flow_scalings(sigma)
    if preconditioning == "edm":
        return edm_scalings(sigma)
    raise ValueError(f"unknown preconditioning {preconditioning!r}")


def loss_weight(preconditioning: str, sigma: torch.Tensor) -> torch.Tensor:
    """Per-σ loss weight making the effective target unit-variance for the chosen preconditioning."""
    return rectified_flow_loss_weight(sigma) if preconditioning == "rectified_flow" else edm_loss_weight(sigma)


def rectified_flow_loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """Per-σ weight ``(1 + σ)² / σ²`` that turns x_0-MSE into velocity-MSE (Cosmos-Predict2)."""
    return (1.0 + sigma) ** 2 / sigma**2


def num_frames_shift(num_frames: int) -> float:
    """σ multiplier √T' for a sample of T' latent frames (resolution/length shift)."""
    return math.sqrt(num_frames)
