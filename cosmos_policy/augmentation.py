"""Training-time image augmentation on latents: random shifts (DrQ-style), applied after the latent cache.

The reference crops a random 90% of each training image and resizes it back (centre crop at test). Here images are
encoded once and cached as latents, so the shift is applied to the latent maps instead: each camera of each sample
is translated by ``(dx, dy)`` drawn uniformly from ``[-max_shift, max_shift]`` latent pixels (one latent pixel is 8
image pixels), with bilinear interpolation and edge padding. The current and the future frame of a camera move
together, so the world model still sees one consistent scene; cameras move independently. At test time nothing is
shifted. With the CPU's linear tokenizer a fractional latent shift equals shifting a slightly blurred image; with the
Wan VAE it is an approximation (VAE latents are close to translation-equivariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cosmos_policy.latent_layout import LatentLayout


def camera_slot_groups(layout: LatentLayout) -> list[list[int]]:
    """Frame indices of each camera: ``[[current, future], ...]`` in camera order."""
    groups: dict[str, list[int]] = {c: [] for c in layout.camera_names}
    for i, slot in enumerate(layout.slots):
        if slot.kind == "camera" and slot.camera is not None:
            groups[slot.camera].append(i)
    return [groups[c] for c in layout.camera_names]


def shift_maps(maps: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate ``(B, C, H, W)`` maps by ``shifts`` ``(B, 2)`` = (dx, dy) pixels (bilinear, edge padding).

    A positive ``dx`` moves the content right: ``out[..., y, x] = maps[..., y - dy, x - dx]``.
    """
    b, _, h, w = maps.shape
    theta = torch.zeros(b, 2, 3, dtype=maps.dtype, device=maps.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0].to(maps.dtype) / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1].to(maps.dtype) / h
    grid = F.affine_grid(theta, [b, maps.shape[1], h, w], align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_shift(latents: torch.Tensor, layout: LatentLayout, max_shift: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly shift every camera frame of ``(B, C, T', H, W)`` latents; other frames are returned unchanged.

    Args:
        latents: clean latents of a training batch (images and injected vectors).
        layout: the frame layout (which frames are cameras, which camera each belongs to).
        max_shift: largest shift in latent pixels, per axis; ``0`` returns ``latents`` itself.
        generator: RNG for the shifts (on ``latents``' device).

    Returns:
        A new tensor (or ``latents`` when ``max_shift == 0``).
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return latents
    out = latents.clone()
    b, c = latents.shape[:2]
    for frames in camera_slot_groups(layout):
        shifts = (torch.rand(b, 2, generator=generator, device=latents.device) * 2 - 1) * max_shift
        stacked = latents[:, :, frames].flatten(1, 2)  # (B, C * len(frames), H, W): one shift per sample
        moved = shift_maps(stacked, shifts).unflatten(1, (c, len(frames)))
        out[:, :, frames] = moved
    return out
