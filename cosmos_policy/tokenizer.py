"""Image tokenizers: pixels ``(N, H, W, 3)`` uint8 ↔ latents ``(N, C, H/8, W/8)``.

Two implementations behind one interface:

* :class:`WanVAETokenizer` – diffusers' ``AutoencoderKLWan`` (Wan 2.1 VAE) loaded from a local folder; latents are
  normalised with the VAE's ``latents_mean`` / ``latents_std``. With ``encoding="clip"`` (the reference's, the
  default) it is *contextual*: :meth:`~WanVAETokenizer.encode_clip` encodes each sample as one causal clip laid
  out like the latent frames (blank = one black frame, every other slot 4 frames: a camera's image repeated, or
  black for slots that injection overwrites), so a camera latent depends on the slots before it and the blank
  slot is the encoding of a black frame. With ``encoding="frame"`` each image is a one-frame video on its own.
* :class:`PixelShuffleTokenizer` – the frozen, deterministic CPU stand-in: space-to-depth 8× (192 values per
  8×8 patch) and a fixed orthonormal projection to C channels (the first three are the patch's mean R, G, B);
  ``decode`` applies the transpose (its pseudo-inverse), good enough for previews.

Use :func:`encode_slots` and :func:`blank_latent` to get the latents a layout's camera and blank slots hold with
any tokenizer. Latents are computed once and cached (:mod:`cosmos_policy.latent_cache`, keyed by ``fingerprint``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from cosmos_policy.configuration_cosmos_policy import TokenizerConfig, config_folder
from cosmos_policy.latent_layout import LatentLayout


@runtime_checkable
class Tokenizer(Protocol):
    """Image ↔ latent interface used by sample building and the Policy.

    A *contextual* tokenizer (``contextual = True``) also has ``encode_clip(layout, current, future)`` and
    ``blank_latent()``: a camera latent then depends on the sample's other images, see :func:`encode_slots`.
    """

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
        encoding: ``"clip"`` (contextual, the reference's) or ``"frame"`` (each image alone); see the module doc.
    """

    def __init__(self, path: str, image_size: int = 224, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, encoding: Literal["clip", "frame"] = "clip") -> None:
        if encoding not in ("clip", "frame"):
            raise ValueError(f"encoding must be 'clip' or 'frame', got {encoding!r}")
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
        self.encoding = encoding
        self.contextual = encoding == "clip"
        # Pixel frames per latent frame after the first (Wan 2.1: 4), i.e. copies of an image per slot.
        self.frames_per_slot = 2 ** sum(bool(d) for d in self.vae.config.temperal_downsample)
        self.fingerprint = (f"wan-{folder_digest(folder)}-s{image_size}-{str(dtype).removeprefix('torch.')}"
                            + (f"-clip{self.frames_per_slot}" if self.contextual else ""))
        self._blank: torch.Tensor | None = None

    def _encode_video(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, F, H, W)`` in [-1, 1] → normalised ``(N, C, 1 + (F-1)/r, h, w)`` (posterior mode)."""
        lat = self.vae.encode(x.to(self.device, self.dtype)).latent_dist.mode().float().cpu()
        return (lat - self.mean) * self.inv_std

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Each image alone, as a one-frame video (the ``frame`` encoding)."""
        return self._encode_video(images_to_tensor(images, self.image_size)[:, :, None])[:, :, 0]

    @torch.no_grad()
    def blank_latent(self) -> torch.Tensor | None:
        """``(C, h, w)``: with ``clip``, the encoding of one black frame (a clip's first frame is encoded alone);
        with ``frame``, None (the blank slot stays zero)."""
        if not self.contextual:
            return None
        if self._blank is None:
            s = self.image_size
            self._blank = self.encode(np.zeros((1, s, s, 3), np.uint8))[0]
        return self._blank

    @torch.no_grad()
    def encode_clip(self, layout: LatentLayout, current: Mapping[str, np.ndarray | torch.Tensor],
                    future: Mapping[str, np.ndarray | torch.Tensor] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Camera latents of N samples, each encoded as one clip laid out like ``layout``'s frames.

        Args:
            layout: the latent layout (slot order; which slots are cameras).
            current: camera → ``(N, H, W, 3)`` uint8 images of the current step.
            future: camera → ``(N, H, W, 3)`` images of the future step; None encodes only the clip's prefix up to
                the current cameras, which gives the same current latents (the VAE is causal).

        Returns:
            ``(current, future)``: camera → ``(N, C, h, w)``; ``future`` is None when not asked for.
        """
        last = max(layout.camera_index(c, future is not None) for c in layout.camera_names)
        n = len(next(iter(current.values())))
        s, r = self.image_size, self.frames_per_slot
        black = torch.full((n, 3, 1, s, s), -1.0)  # uint8 0 in the tokenizer's [-1, 1] range
        parts = []
        for slot in layout.slots[:last + 1]:
            if slot.kind == "blank":
                parts.append(black)
            elif slot.kind == "camera":
                source = future if slot.future else current
                images = source[slot.camera]  # type: ignore[index]
                if len(images) != n:
                    raise ValueError(f"camera {slot.camera!r} has {len(images)} images for {n} samples")
                parts.append(images_to_tensor(images, s)[:, :, None].expand(-1, -1, r, -1, -1))
            else:
                parts.append(black.expand(-1, -1, r, -1, -1))
        lat = self._encode_video(torch.cat(parts, dim=2))
        cur = {c: lat[:, :, layout.camera_index(c)].contiguous() for c in layout.camera_names}
        fut = None if future is None else {c: lat[:, :, layout.camera_index(c, True)].contiguous()
                                            for c in layout.camera_names}
        return cur, fut

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


def is_contextual(tokenizer: Tokenizer) -> bool:
    """Whether a camera latent depends on the sample's other images (a clip-encoding tokenizer)."""
    return bool(getattr(tokenizer, "contextual", False))


def encode_slots(tokenizer: Tokenizer, layout: LatentLayout, current: Mapping[str, np.ndarray | torch.Tensor],
                 future: Mapping[str, np.ndarray | torch.Tensor] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The latents ``layout``'s camera slots hold for N samples, with any tokenizer.

    Args:
        tokenizer: a per-image tokenizer (each image encoded alone) or a contextual one (one clip per sample).
        layout: the latent layout.
        current: camera → ``(N, H, W, 3)`` uint8 images of the current step (every camera of the layout).
        future: the same for the future step, or None when only the current frames are needed.

    Returns:
        ``(current, future)``: camera → ``(N, C, h, w)`` float32; ``future`` None when not given.
    """
    missing = [c for c in layout.camera_names if c not in current or (future is not None and c not in future)]
    if missing:
        raise KeyError(f"images lack cameras {missing} of layout {layout.name}")
    if is_contextual(tokenizer):
        return tokenizer.encode_clip(layout, current, future)  # type: ignore[attr-defined]
    cur = {c: tokenizer.encode(current[c]) for c in layout.camera_names}
    return cur, None if future is None else {c: tokenizer.encode(future[c]) for c in layout.camera_names}


def blank_latent(tokenizer: Tokenizer) -> torch.Tensor | None:
    """``(C, h, w)`` latent of the blank slot, or None where it is zeros (per-image tokenizers)."""
    fn = getattr(tokenizer, "blank_latent", None)
    return fn() if fn is not None else None


def build_tokenizer(config: TokenizerConfig, device: str | torch.device = "cpu") -> Tokenizer:
    """Tokenizer from config: the Wan VAE when ``kind == "wan"`` (local path), else the stand-in."""
    if config.kind == "wan":
        return WanVAETokenizer(config.path or "", image_size=config.image_size, device=device,
                               encoding=config.wan_encoding)
    return PixelShuffleTokenizer(config.image_size, config.latent_channels, config.seed)
