"""A uniformly random policy: the failure baseline of the rollout engine and its benchmark."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sims.types import Observation


class RandomPolicy:
    """Uniform actions in ``[-1, 1]``, ``chunk_size`` at a time; deterministic given ``seed``.

    Args:
        action_dim: action size (7 for LIBERO).
        chunk_size: K actions per ``act`` call.
        seed: seed of the action stream.
        scale: actions are drawn in ``[-scale, scale]``.
    """

    requires_images = False
    name = "random"

    def __init__(self, action_dim: int, chunk_size: int = 16, seed: int = 0, scale: float = 1.0) -> None:
        if action_dim < 1 or chunk_size < 1:
            raise ValueError(f"action_dim and chunk_size must be >= 1, got {action_dim}, {chunk_size}")
        self.action_dim, self.chunk_size, self.scale = action_dim, chunk_size, scale
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, observations: Sequence[Observation], instructions: Sequence[str]) -> np.ndarray:
        shape = (len(observations), self.chunk_size, self.action_dim)
        return self._rng.uniform(-self.scale, self.scale, size=shape).astype(np.float32)
