"""Latent-frame layout: which latent frame carries which modality (Cosmos Policy, arXiv 2601.16163 §3).

One training sample is a sequence of ``T'`` latent frames of shape ``(C, H, W)``. The layout is built from
configuration (camera names, chunk size, vector dims) and passed around explicitly; it is never inferred
from frame counts. LIBERO (2 cameras) gives 9 frames::

    [blank, proprio, cam:eye_in_hand, cam:agentview, action,
     future_proprio, future_cam:eye_in_hand, future_cam:agentview, value]

Three cameras give 11. An optional privileged ``object_state`` frame (off by default) is inserted after the
current cameras, as a conditioning input only.

Sample types decide which frames are conditioning (given clean) and which are generated:

* ``policy``: condition on current frames; generate action, future frames and value.
* ``world_model``: condition on current frames + action; generate future frames and value.
* ``value``: condition on everything but the value; generate the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

SampleType = Literal["policy", "world_model", "value"]
SAMPLE_TYPES: tuple[SampleType, ...] = ("policy", "world_model", "value")
SAMPLE_TYPE_IDS: dict[str, int] = {name: i for i, name in enumerate(SAMPLE_TYPES)}

SlotKind = Literal["blank", "proprio", "camera", "object_state", "action", "value"]


@dataclass(frozen=True)
class Slot:
    """One latent frame of the layout.

    Attributes:
        name: unique name, e.g. ``"cam:agentview"`` or ``"future_proprio"``.
        kind: what the frame holds.
        future: True for frames describing the state K steps later.
        camera: camera name for ``kind == "camera"``.
    """

    name: str
    kind: SlotKind
    future: bool = False
    camera: str | None = None


@dataclass(frozen=True)
class LatentLayout:
    """Frame layout of one sample, derived from configuration.

    Attributes:
        camera_names: cameras in frame order (SPEC: wrist first, then third-person views).
        proprio_dim: length P of the proprioception vector.
        action_dim: length A of one action.
        chunk_size: K actions per chunk (also the future-state offset).
        latent_channels: C of the tokenizer latents.
        latent_height: H of one latent frame.
        latent_width: W of one latent frame.
        object_state_dim: S of the optional privileged object-state frame; 0 disables the slot.
        name: preset name, for messages only.
    """

    camera_names: tuple[str, ...]
    proprio_dim: int
    action_dim: int
    chunk_size: int = 16
    latent_channels: int = 16
    latent_height: int = 8
    latent_width: int = 8
    object_state_dim: int = 0
    name: str = "custom"
    slots: tuple[Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_names", tuple(self.camera_names))
        if not self.camera_names:
            raise ValueError("camera_names must name at least one camera, got ()")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera_names must be unique, got {self.camera_names}")
        for attr in ("proprio_dim", "action_dim", "chunk_size", "latent_channels", "latent_height", "latent_width"):
            if getattr(self, attr) <= 0:
                raise ValueError(f"{attr} must be > 0, got {getattr(self, attr)}")
        if self.object_state_dim < 0:
            raise ValueError(f"object_state_dim must be >= 0, got {self.object_state_dim}")
        capacity = self.frame_numel
        for what, dim in (("proprio", self.proprio_dim), ("action chunk", self.action_dim * self.chunk_size),
                          ("object state", self.object_state_dim)):
            if dim > capacity:
                raise ValueError(f"{what} of {dim} values does not fit one latent frame of C*H*W={capacity}")
        slots: list[Slot] = [Slot("blank", "blank"), Slot("proprio", "proprio")]
        slots += [Slot(f"cam:{c}", "camera", camera=c) for c in self.camera_names]
        if self.object_state_dim:
            slots.append(Slot("object_state", "object_state"))
        slots.append(Slot("action", "action"))
        slots.append(Slot("future_proprio", "proprio", future=True))
        slots += [Slot(f"future_cam:{c}", "camera", future=True, camera=c) for c in self.camera_names]
        slots.append(Slot("value", "value", future=True))
        object.__setattr__(self, "slots", tuple(slots))

    # ---------------------------------------------------------------- derived properties
    @property
    def num_frames(self) -> int:
        """T', the number of latent frames."""
        return len(self.slots)

    @property
    def frame_numel(self) -> int:
        """C*H*W, the number of values one injected frame holds."""
        return self.latent_channels * self.latent_height * self.latent_width

    @property
    def action_numel(self) -> int:
        """K*A, the flattened action-chunk length."""
        return self.chunk_size * self.action_dim

    def index(self, name: str) -> int:
        """Frame index of the slot called ``name`` (raises KeyError listing valid names)."""
        for i, slot in enumerate(self.slots):
            if slot.name == name:
                return i
        raise KeyError(f"no slot {name!r} in layout {self.name}; slots: {[s.name for s in self.slots]}")

    @property
    def action_index(self) -> int:
        return self.index("action")

    @property
    def value_index(self) -> int:
        return self.index("value")

    @property
    def current_indices(self) -> tuple[int, ...]:
        """Frames describing the present (blank, proprio, cameras, optional object state)."""
        return tuple(i for i, s in enumerate(self.slots) if not s.future and s.kind != "action")

    @property
    def future_indices(self) -> tuple[int, ...]:
        """Future proprio and camera frames (not the value)."""
        return tuple(i for i, s in enumerate(self.slots) if s.future and s.kind != "value")

    def camera_index(self, camera: str, future: bool = False) -> int:
        return self.index(f"future_cam:{camera}" if future else f"cam:{camera}")

    # ---------------------------------------------------------------- masks
    def condition_mask(self, sample_type: SampleType) -> torch.Tensor:
        """Per-frame conditioning mask for one sample type.

        Returns:
            ``(T',)`` bool tensor, True where the frame is given (clean), False where it is generated.
        """
        cond = torch.zeros(self.num_frames, dtype=torch.bool)
        cond[list(self.current_indices)] = True
        if sample_type == "policy":
            return cond
        cond[self.action_index] = True
        if sample_type == "world_model":
            return cond
        if sample_type == "value":
            cond[list(self.future_indices)] = True
            return cond
        raise ValueError(f"unknown sample type {sample_type!r}; expected one of {SAMPLE_TYPES}")

    def condition_masks(self, sample_types: Sequence[SampleType]) -> torch.Tensor:
        """Stack of :meth:`condition_mask`, ``(B, T')`` bool."""
        return torch.stack([self.condition_mask(t) for t in sample_types])

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("slots")
        data["camera_names"] = list(self.camera_names)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatentLayout:
        kwargs = dict(data)
        kwargs["camera_names"] = tuple(kwargs["camera_names"])
        return cls(**kwargs)

    def describe(self) -> str:
        """One line per frame, for error messages and docs."""
        return ", ".join(f"{i}:{s.name}" for i, s in enumerate(self.slots))


def layout_mismatch(expected: LatentLayout, found: LatentLayout) -> list[str]:
    """Human-readable differences between two layouts (empty when compatible)."""
    a, b = expected.to_dict(), found.to_dict()
    return [f"{k}: expected {a[k]!r}, found {b[k]!r}" for k in a if k != "name" and a[k] != b.get(k)]


# ------------------------------------------------------------------ injection / extraction
def inject(vectors: torch.Tensor, frame_shape: tuple[int, int, int]) -> torch.Tensor:
    """Tile vectors to fill whole latent frames (latent-frame injection, Cosmos Policy §3.2).

    Args:
        vectors: ``(B, D)`` normalised values.
        frame_shape: ``(C, H, W)``.

    Returns:
        ``(B, C, H, W)``; flat position ``j`` holds ``vectors[:, j % D]``.
    """
    b, d = vectors.shape
    n = math.prod(frame_shape)
    reps = math.ceil(n / d)
    return vectors.repeat(1, reps)[:, :n].reshape(b, *frame_shape)


def extract(frames: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`inject`: average every copy of each entry.

    Args:
        frames: ``(B, C, H, W)`` (or any ``(B, ...)``) latent frames.
        dim: D, the vector length that was injected.

    Returns:
        ``(B, D)`` averages over positions ``j`` with ``j % D == i``.
    """
    b = frames.shape[0]
    flat = frames.reshape(b, -1)
    n = flat.shape[1]
    reps = math.ceil(n / dim)
    pad = reps * dim - n
    if pad:
        flat = torch.cat([flat, flat.new_zeros(b, pad)], dim=1)
    sums = flat.reshape(b, reps, dim).sum(dim=1)
    counts = torch.full((dim,), float(reps), dtype=flat.dtype, device=flat.device)
    if pad:
        counts[dim - pad:] -= 1
    return sums / counts


def decode_value(frames: torch.Tensor) -> torch.Tensor:
    """Value frame ``(B, C, H, W)`` → value in [0, 1]: ``clip((mean + 1) / 2, 0, 1)``, shape ``(B,)``."""
    return ((frames.reshape(frames.shape[0], -1).mean(dim=1) + 1.0) / 2.0).clamp(0.0, 1.0)


# ------------------------------------------------------------------ presets
def libero_layout(latent_hw: int = 8, object_state_dim: int = 0, chunk_size: int = 16) -> LatentLayout:
    """LIBERO: wrist + third-person camera, proprio 9, action 7, K=16 → 9 frames (10 with object state)."""
    return LatentLayout(camera_names=("eye_in_hand", "agentview"), proprio_dim=9, action_dim=7,
                        chunk_size=chunk_size, latent_height=latent_hw, latent_width=latent_hw,
                        object_state_dim=object_state_dim, name="libero")


def robocasa_layout(latent_hw: int = 8, object_state_dim: int = 0, chunk_size: int = 16) -> LatentLayout:
    """RoboCasa: wrist + left/right cameras, proprio 68, action 12, K=16 → 11 frames."""
    return LatentLayout(camera_names=("eye_in_hand", "agentview_left", "agentview_right"), proprio_dim=68,
                        action_dim=12, chunk_size=chunk_size, latent_height=latent_hw, latent_width=latent_hw,
                        object_state_dim=object_state_dim, name="robocasa")


LAYOUT_PRESETS = {"libero": libero_layout, "robocasa": robocasa_layout}


def get_layout(name: str, **kwargs: Any) -> LatentLayout:
    """Layout preset by name (``libero`` or ``robocasa``)."""
    if name not in LAYOUT_PRESETS:
        raise ValueError(f"unknown layout preset {name!r}; expected one of {sorted(LAYOUT_PRESETS)}")
    return LAYOUT_PRESETS[name](**kwargs)
