"""The observation the policy reads, as a protocol: any object with these attributes works (the simulator
adapters' ``sims.types.Observation`` satisfies it), so the model package needs no simulator package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PolicyObservation(Protocol):
    """One observation of one environment.

    Attributes:
        images: camera name → ``(H, W, 3)`` uint8 image, upright (row 0 is the top).
        proprio: ``(P,)`` robot proprioception in the layout's convention.
        object_state: optional ``(S,)`` privileged object state (layouts with an object-state slot only).
    """

    @property
    def images(self) -> Mapping[str, np.ndarray]: ...

    @property
    def proprio(self) -> np.ndarray: ...

    @property
    def object_state(self) -> np.ndarray | None: ...
