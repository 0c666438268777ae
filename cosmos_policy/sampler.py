"""ODE samplers over a denoiser ``D(x, σ) ≈ x_0`` (k-diffusion conventions; no network or config code).

``denoiser`` is any callable ``(x (B, ...), sigma (scalar tensor)) -> x_0 estimate``; conditioning is bound by
the caller (e.g. ``functools.partial`` over :class:`~cosmos_policy.denoiser.CosmosDenoiser`). ``sigmas`` is a
decreasing grid ending in 0 (see :func:`~cosmos_policy.noise_schedule.sampling_sigmas`); ``x`` starts as
``noise * sigmas[0]``. The last step to σ = 0 returns the clean estimate at the previous σ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative ``dx/dσ = (x - D(x)) / σ``."""
    return (x - denoised) / sigma


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler (first-order) solver of the probability-flow ODE (Karras et al. 2022, Alg. 1 without 2nd order)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's second-order solver (Karras et al. 2022, Alg. 1); Euler on the final step to σ = 0."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    callback: Callback | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep, one denoiser call per step (Lu et al. 2022, Alg. 2).

    Works in ``λ = -log σ``; reuses the previous step's x_0 estimate for the second-order correction.
    """
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            if old_denoised is None:
                d = denoised
            else:
                r = (t - (-sigmas[i - 1].log())) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old_denoised = denoised
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """Sampler function by name (``euler``, ``heun``, ``dpmpp_2m``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
