"""Min-max normalisation of proprio / actions / object state to [-1, 1] with demo statistics (SPEC §3.2)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_EPS = 1e-8


@dataclass(frozen=True)
class MinMax:
    """Per-dimension range of one vector quantity."""

    min: np.ndarray
    max: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.min, np.float32), np.asarray(self.max, np.float32)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError(f"min/max must be 1-D of equal shape, got {lo.shape} and {hi.shape}")
        if np.any(hi < lo):
            raise ValueError(f"max < min in dims {np.nonzero(hi < lo)[0].tolist()}")
        object.__setattr__(self, "min", lo)
        object.__setattr__(self, "max", hi)

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(..., D)`` → ``2 (x - min) / (max - min) - 1``; constant dims map to 0."""
        span = self.max - self.min
        out = 2.0 * (np.asarray(x, np.float32) - self.min) / np.maximum(span, _EPS) - 1.0
        return np.where(span > _EPS, out, 0.0).astype(np.float32)

    def unnormalize(self, y: np.ndarray, clip: bool = True) -> np.ndarray:
        """Inverse of :meth:`normalize`; clips to [-1, 1] first when ``clip``."""
        y = np.asarray(y, np.float32)
        if clip:
            y = np.clip(y, -1.0, 1.0)
        return ((y + 1.0) * 0.5 * (self.max - self.min) + self.min).astype(np.float32)

    @classmethod
    def from_arrays(cls, arrays: Iterable[np.ndarray]) -> MinMax:
        data = [np.asarray(a, np.float32).reshape(-1, np.asarray(a).shape[-1]) for a in arrays]
        if not data:
            raise ValueError("no arrays to compute statistics from")
        stacked = np.concatenate(data, axis=0)
        return cls(stacked.min(axis=0), stacked.max(axis=0))

    def to_dict(self) -> dict[str, list[float]]:
        return {"min": self.min.tolist(), "max": self.max.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinMax:
        return cls(np.asarray(data["min"], np.float32), np.asarray(data["max"], np.float32))


@dataclass(frozen=True)
class NormalizationStats:
    """Statistics saved with the model (computed from demonstrations only).

    Attributes:
        proprio: range of proprio ``(P,)``.
        action: range of one action ``(A,)`` (shared by all K steps of a chunk).
        object_state: range of the optional privileged object state ``(S,)``.
    """

    proprio: MinMax
    action: MinMax
    object_state: MinMax | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"proprio": self.proprio.to_dict(), "action": self.action.to_dict()}
        if self.object_state is not None:
            out["object_state"] = self.object_state.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalizationStats:
        obj = data.get("object_state")
        return cls(MinMax.from_dict(data["proprio"]), MinMax.from_dict(data["action"]),
                   MinMax.from_dict(obj) if obj is not None else None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> NormalizationStats:
        return cls.from_dict(json.loads(text))


def compute_stats(proprio: Iterable[np.ndarray], actions: Iterable[np.ndarray],
                  object_state: Iterable[np.ndarray] | None = None) -> NormalizationStats:
    """Min/max per dimension over demo episodes.

    Args:
        proprio: per episode ``(T, P)``.
        actions: per episode ``(T, A)``.
        object_state: per episode ``(T, S)``, optional.
    """
    obj = list(object_state) if object_state is not None else []
    return NormalizationStats(MinMax.from_arrays(proprio), MinMax.from_arrays(actions),
                              MinMax.from_arrays(obj) if obj else None)
