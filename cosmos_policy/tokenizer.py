"""Image tokenizers: pixels ``(N, H, W, 3)`` uint8 ↔ latents ``(N, C, H/8, W/8)``.

Two implementations behind one interface:

* :class:`WanVAETokenizer` – diffusers' ``AutoencoderKLWan`` (Wan 2.1 VAE) loaded from a local folder. Each
  image is encoded as a one-frame video (the VAE encodes the first frame alone), and latents are normalised
  with the VAE's ``latents_mean`` / ``latents_std``.
* :class:`PixelShuffleTokenizer` – the frozen, deterministic CPU stand-in: space-to-depth 8× (192 values per
  8×8 patch) and a fixed orthonormal projection to C channels (the first three are the patch's mean R, G, B);
  ``decode`` applies the transpose (its pseudo-inverse), good enough for previews.

Latents are computed once per image and cached (:mod:`cosmos_policy.latent_cache`, keyed by ``fingerprint``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from cosmos_policy.configuration_cosmos_policy import TokenizerConfig, config_folder


@runtime_checkable
class Tokenizer(Protocol):
    """Image ↔ latent interface used by sample building and the Policy."""

    image_size: int
    latent_channels: int
    fingerprint: str  # identifies the exact image → latent map (keys the latent cache)

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 → ``(N, C, image_size/8, image_size/8)`` float32 latents."""
        ...

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """``(N, C, h, w)`` latents → ``(N, 8h, 8w, 3)`` uint8 images."""
        ...


def images_to_tensor(images: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → float32 ``(N, 3, S, S)`` in [-1, 1], resized (antialiased bilinear) to S."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images (N, H, W, 3), got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return x


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [-1, 1] → uint8 ``(N, H, W, 3)``."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class PixelShuffleTokenizer:
    """Frozen stand-in tokenizer: pixel-unshuffle 8× then a fixed orthonormal 192 → C projection.

    Args:
        image_size: images are resized to ``image_size`` square before encoding.
        latent_channels: C (16, like the Wan VAE).
        seed: seed of the fixed projection (part of the checkpoint config).
    """

    def __init__(self, image_size: int = 64, latent_channels: int = 16, seed: int = 0) -> None:
        self.image_size = image_size
        self.latent_channels = latent_channels
        gen = torch.Generator().manual_seed(seed)
        patch = 3 * 8 * 8
        # First 3 directions = per-patch mean colour (R, G, B; pixel_unshuffle puts channel c at c*64..c*64+63),
        # so flat-colour 8x8 patches decode exactly; the rest are random, all orthonormal.
        dc = torch.zeros(patch, 3, dtype=torch.float64)
        for c in range(3):
            dc[c * 64:(c + 1) * 64, c] = 1.0 / 8.0
        rand = torch.randn(patch, max(latent_channels - 3, 0), generator=gen, dtype=torch.float64)
        basis, _ = torch.linalg.qr(torch.cat([dc, rand], dim=1)[:, :latent_channels])
        basis = basis * torch.sign((basis * torch.cat([dc, rand], dim=1)[:, :latent_channels]).sum(0, keepdim=True))
        self.projection = basis.T.float().contiguous()  # (C, 192), orthonormal rows
        self.fingerprint = f"pixel_shuffle-v1-s{image_size}-c{latent_channels}-seed{seed}"

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = images_to_tensor(images, self.image_size)
        patches = F.pixel_unshuffle(x, 8)  # (N, 192, h, w)
        return torch.einsum("kp,nphw->nkhw", self.projection, patches).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        patches = torch.einsum("kp,nkhw->nphw", self.projection, latents.float().cpu())
        return tensor_to_images(F.pixel_shuffle(patches, 8))


class WanVAETokenizer:
    """Wan 2.1 VAE (diffusers ``AutoencoderKLWan``) from a local diffusers-format folder.

    Args:
        path: folder with ``config.json`` + weights (a pipeline folder's ``vae/`` subfolder also works).
        image_size: images are resized to this square size (224 → 28×28 latents).
        device, dtype: where the VAE runs.
    """

    def __init__(self, path: str, image_size: int = 224, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        folder = config_folder(path, "vae", "AutoencoderKLWan")
        from cosmos_policy.modeling_cosmos_policy import prepare_diffusers_import

        prepare_diffusers_import()
        from diffusers import AutoencoderKLWan

        self.vae = AutoencoderKLWan.from_pretrained(str(folder), torch_dtype=dtype).to(device).eval()
        self.vae.requires_grad_(False)
        self.image_size = image_size
        self.latent_channels = int(self.vae.config.z_dim)
        self.device, self.dtype = torch.device(device), dtype
        shape = (1, self.latent_channels, 1, 1, 1)
        self.mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(shape)
        self.inv_std = 1.0 / torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(shape)
        self.fingerprint = f"wan-{folder_digest(folder)}-s{image_size}-{str(dtype).removeprefix('torch.')}"

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = images_to_tensor(images, self.image_size)[:, :, None]  # (N, 3, 1, H, W)
        lat = self.vae.encode(x.to(self.device, self.dtype)).latent_dist.mode().float().cpu()
        return ((lat - self.mean) * self.inv_std)[:, :, 0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        lat = latents.float().cpu()[:, :, None] / self.inv_std + self.mean
        x = self.vae.decode(lat.to(self.device, self.dtype)).sample.float().cpu()
        return tensor_to_images(x[:, :, 0])


def folder_digest(folder: Path) -> str:
    """Short content digest of a weights folder (``config.json`` and every weights file; ~1 s per GB)."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def build_tokenizer(config: TokenizerConfig, device: str | torch.device = "cpu") -> Tokenizer:
    """Tokenizer from config: the Wan VAE when ``kind == "wan"`` (local path), else the stand-in."""
    if config.kind == "wan":
        return WanVAETokenizer(config.path or "", image_size=config.image_size, device=device)
    return PixelShuffleTokenizer(config.image_size, config.latent_channels, config.seed)
