"""Denoiser: EDM / rectified-flow preconditioning around diffusers' ``CosmosTransformer3DModel``.

One module owns c_skip/c_out/c_in/c_noise, the per-frame timesteps, the mask and padding channels and the
clamping of conditioning frames; ``forward`` serves the sampler and ``loss`` the training step, so the
conditioning logic exists once (k-diffusion ``Denoiser`` pattern).
"""

from __future__ import annotations

import torch
from torch import nn

from cosmos_policy.configuration_cosmos_policy import NoiseConfig
from cosmos_policy.noise_schedule import loss_weight, scalings


class CosmosDenoiser(nn.Module):
    """``D(x_σ; σ, cond) ≈ x_0`` for latent-frame sequences with per-frame conditioning.

    Args:
        transformer: a ``CosmosTransformer3DModel`` built with ``concat_padding_mask=False`` and
            ``in_channels = C + 1 (+1 with padding_mask_channel)``.
        noise: preconditioning / loss settings.
        padding_mask_channel: append an all-zero padding-mask channel (what upstream Cosmos-Predict2 does for
            unpadded inputs) in plain torch, instead of diffusers' torchvision resize.
        fps: forwarded to the transformer's RoPE (None = image-style temporal positions).
    """

    def __init__(self, transformer: nn.Module, noise: NoiseConfig, padding_mask_channel: bool,
                 fps: int | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.noise = noise
        self.padding_mask_channel = padding_mask_channel
        self.fps = fps

    def _network_input(self, x: torch.Tensor, cond_mask: torch.Tensor, cond_latents: torch.Tensor,
                       c_in: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        cond = cond_mask[:, None, :, None, None]
        x_in = torch.where(cond, cond_latents, c_in[:, None, :, None, None] * x)
        extra = [cond.to(x.dtype).expand(b, 1, t, h, w)]
        if self.padding_mask_channel:
            extra.append(x.new_zeros(b, 1, t, h, w))
        return torch.cat([x_in, *extra], dim=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond_mask: torch.Tensor,
                cond_latents: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Denoise.

        Args:
            x: ``(B, C, T', H, W)`` noisy latents ``x_0 + σ·n`` (values of conditioning frames are ignored).
            sigma: scalar, ``(B,)`` or ``(B, T')`` noise level of the generated frames.
            cond_mask: ``(B, T')`` bool, True for conditioning frames.
            cond_latents: ``(B, C, T', H, W)`` clean latents; used on conditioning frames.
            text_emb: ``(B, L, D_text)`` text embeddings for cross-attention.

        Returns:
            ``(B, C, T', H, W)`` float32 estimate of x_0; conditioning frames equal ``cond_latents``.
        """
        b, _, t, _, _ = x.shape
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.reshape(-1, 1).expand(b, t) if sigma.ndim <= 1 else sigma.float()
        c_skip, c_out, c_in, c_noise = scalings(self.noise.preconditioning, sigma)
        timestep = torch.where(cond_mask, torch.zeros_like(c_noise), c_noise) * self.noise.timestep_scale
        net_in = self._network_input(x.float(), cond_mask, cond_latents.float(), c_in)
        dtype = next(self.transformer.parameters()).dtype
        if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
            dtype = torch.float32
        out = self.transformer(hidden_states=net_in.to(dtype), timestep=timestep.to(dtype).view(b, 1, t, 1, 1),
                               encoder_hidden_states=text_emb.to(dtype), fps=self.fps, return_dict=False)[0]
        denoised = c_skip[:, None, :, None, None] * x.float() + c_out[:, None, :, None, None] * out.float()
        return torch.where(cond_mask[:, None, :, None, None], cond_latents.float(), denoised)

    def loss(self, x0: torch.Tensor, cond_mask: torch.Tensor, text_emb: torch.Tensor, sigma: torch.Tensor,
             noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted denoising loss on generated frames only.

        Args:
            x0: ``(B, C, T', H, W)`` clean latents (images encoded, vectors injected).
            cond_mask: ``(B, T')`` bool conditioning mask.
            text_emb: ``(B, L, D_text)``.
            sigma: ``(B,)`` training σ.
            noise: ``(B, C, T', H, W)`` standard normal noise.

        Returns:
            ``(loss_per_sample (B,), denoised (B, C, T', H, W))``; loss = loss_scale · w(σ) · mean squared error
            over the generated frames, with ``w(σ)`` from :func:`~cosmos_policy.noise_schedule.loss_weight`.
        """
        x_noisy = x0 + sigma[:, None, None, None, None] * noise
        denoised = self(x_noisy, sigma, cond_mask, x0, text_emb)
        generated = (~cond_mask).float()[:, None, :, None, None]
        sq = (denoised - x0.float()) ** 2 * generated
        per_elem = sq.sum(dim=(1, 2, 3, 4)) / (generated.sum(dim=(1, 2, 3, 4)) * x0[:, :, 0].numel() / x0.shape[0]
                                               ).clamp_min(1.0)
        loss = self.noise.loss_scale * loss_weight(self.noise.preconditioning, sigma.float()) * per_elem
        return loss, denoised
