"""On-disk latent cache: each episode's images are encoded once per tokenizer, then training reads latents.

Layout: ``<root>/<folder>/<episode_id[:2]>/<episode_id>.safetensors`` with one tensor per camera
(``(N, C, h, w)``), ``image_steps`` and a content digest of the images in the file's metadata. ``<folder>`` is the
tokenizer's fingerprint; a contextual (clip-encoding) tokenizer's latents also depend on the latent layout (slot
order, chunk size), so its folder adds a digest of the layout, and its entries also hold ``future/<camera>`` (each
step's future frame, encoded in that step's clip) and ``blank``. A hit needs the same folder, the same cameras
and the same image bytes (digest): an episode id rewritten with other images (a re-run rollout) is re-encoded,
never served stale. Files are written to a temporary name and
renamed, so a crash never leaves a half-written entry; a corrupt entry is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_policy.latent_layout import LatentLayout
from cosmos_policy.samples import EpisodeArrays, EpisodeLatents, encode_episode
from cosmos_policy.tokenizer import Tokenizer, is_contextual

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def images_digest(episode: EpisodeArrays, cameras: Sequence[str]) -> str:
    """sha256 over the image steps and the raw bytes of each camera's images (in camera order)."""
    h = hashlib.sha256(np.asarray(episode.image_steps, np.int64).tobytes())
    for cam in cameras:
        imgs = np.ascontiguousarray(episode.images[cam])
        h.update(f"{cam}:{imgs.shape}:{imgs.dtype}".encode())
        h.update(imgs.tobytes())
    return h.hexdigest()


def entry_path(folder: str | Path, episode_id: str) -> Path:
    """Where one episode's entry lives in a fingerprint folder."""
    if not _SAFE_ID.match(episode_id):
        raise ValueError(f"episode id {episode_id!r} is not usable as a file name")
    return Path(folder) / episode_id[:2] / f"{episode_id}.safetensors"


@dataclass
class CacheEntry:
    """One cached episode: camera → latents at ``image_steps``; a contextual tokenizer's future latents (camera →
    ``(N, C, h, w)``, row i the future frame of the sample at ``image_steps[i]``) and blank latent, else None."""

    latents: dict[str, np.ndarray]
    image_steps: np.ndarray
    future_latents: dict[str, np.ndarray] | None = None
    blank: np.ndarray | None = None


def _entry(f, cameras: Sequence[str]) -> CacheEntry:
    keys = set(f.keys())
    missing = [c for c in cameras if f"camera/{c}" not in keys]
    if missing:
        raise KeyError(f"cached latents lack cameras {missing}")
    future = None
    if any(k.startswith("future/") for k in keys):
        missing = [c for c in cameras if f"future/{c}" not in keys]
        if missing:
            raise KeyError(f"cached future latents lack cameras {missing}")
        future = {c: f.get_tensor(f"future/{c}").numpy() for c in cameras}
    return CacheEntry({c: f.get_tensor(f"camera/{c}").numpy() for c in cameras}, f.get_tensor("image_steps").numpy(),
                      future, f.get_tensor("blank").numpy() if "blank" in keys else None)


def read_entry(folder: str | Path, episode_id: str, cameras: Sequence[str]) -> CacheEntry:
    """One cached episode, without a tokenizer (e.g. on a data reader that only reads what
    :meth:`LatentCache.encode` wrote). Raises ``FileNotFoundError`` / ``KeyError``."""
    from safetensors import safe_open

    path = entry_path(folder, episode_id)
    if not path.exists():
        raise FileNotFoundError(f"no cached latents for episode {episode_id} under {folder}")
    with safe_open(str(path), framework="pt") as f:
        try:
            return _entry(f, cameras)
        except KeyError as err:
            raise KeyError(f"episode {episode_id}: {err.args[0]}") from None


def layout_digest(layout: LatentLayout) -> str:
    """Short digest of what a contextual tokenizer's clip depends on: the layout without its name."""
    data = {k: v for k, v in layout.to_dict().items() if k != "name"}
    return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:10]


@dataclass
class CacheStats:
    """Hits (read from disk) and misses (encoded and written) since the cache object was made."""

    hits: int = 0
    misses: int = 0


class LatentCache:
    """Latents of episodes for one tokenizer.

    Args:
        root: cache folder (e.g. ``<lake>/cache/latents``); one subfolder per tokenizer fingerprint.
        tokenizer: the tokenizer whose latents are cached (its ``fingerprint`` names the subfolder).
        dtype: storage dtype (float16 halves disk and memory; latents are O(1) values).
        layout: the latent layout; required by a contextual tokenizer (its clips follow the layout).
    """

    def __init__(self, root: str | Path, tokenizer: Tokenizer, dtype: np.dtype = np.float16,
                 layout: LatentLayout | None = None) -> None:
        fingerprint = getattr(tokenizer, "fingerprint", None)
        if not fingerprint:
            raise ValueError(f"{type(tokenizer).__name__} has no 'fingerprint'; the cache cannot key its latents")
        self.tokenizer = tokenizer
        self.dtype = np.dtype(dtype)
        self.contextual = is_contextual(tokenizer)
        if self.contextual and layout is None:
            raise ValueError(f"{type(tokenizer).__name__} encodes clips laid out like the latent frames: "
                             f"LatentCache needs the layout")
        self.layout = layout
        name = f"{fingerprint}-layout{layout_digest(layout)}" if self.contextual and layout else str(fingerprint)
        self.folder = Path(root) / name
        self.stats = CacheStats()

    def path(self, episode_id: str) -> Path:
        return entry_path(self.folder, episode_id)

    def __contains__(self, episode_id: str) -> bool:
        return self.path(episode_id).exists()

    def load(self, episode_id: str, cameras: Sequence[str], digest: str | None = None) -> CacheEntry | None:
        """The cached entry, or None when absent, unreadable, or stored for other cameras/images."""
        from safetensors import safe_open

        path = self.path(episode_id)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if digest is not None and meta.get("images_digest") != digest:
                    return None
                entry = _entry(f, cameras)
        except Exception:  # noqa: BLE001 - a truncated/corrupt/incomplete file is a miss; it is rewritten
            return None
        return entry if (entry.future_latents is not None) == self.contextual else None

    def store(self, episode_id: str, latents: EpisodeLatents, digest: str) -> Path:
        """Write one episode's latents atomically (temp file + rename)."""
        from safetensors.torch import save_file

        path = self.path(episode_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"camera/{c}": torch.from_numpy(np.ascontiguousarray(v)) for c, v in latents.latents.items()}
        for c, v in (latents.future_latents or {}).items():
            tensors[f"future/{c}"] = torch.from_numpy(np.ascontiguousarray(v))
        if latents.blank is not None:
            tensors["blank"] = torch.from_numpy(np.ascontiguousarray(latents.blank))
        tensors["image_steps"] = torch.from_numpy(np.asarray(latents.image_steps, np.int64))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"images_digest": digest, "fingerprint": self.folder.name})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def encode(self, episode_id: str, episode: EpisodeArrays, cameras: Sequence[str] | None = None
               ) -> EpisodeLatents:
        """The episode's latents: from the cache when present and current, else encoded once and stored."""
        cams = list(cameras or (self.layout.camera_names if self.contextual and self.layout else episode.images))
        missing = [c for c in cams if c not in episode.images]
        if missing:
            raise KeyError(f"episode {episode_id} has no images for cameras {missing} (has {sorted(episode.images)})")
        digest = images_digest(episode, cams)
        if self.contextual:  # a step's clip also holds the images at t' = min(t + K, T - 1)
            digest = hashlib.sha256(f"{digest}:length={episode.length}".encode()).hexdigest()
        entry = self.load(episode_id, cams, digest)
        if entry is not None:
            self.stats.hits += 1
            return EpisodeLatents.from_arrays(episode, entry.latents, entry.future_latents, entry.blank)
        self.stats.misses += 1
        encoded = encode_episode(self.tokenizer, episode, cams, dtype=self.dtype, layout=self.layout)
        self.store(episode_id, encoded, digest)
        return encoded

