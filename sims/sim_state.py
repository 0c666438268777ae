"""Rewinding a robosuite ``MjSim`` to render a past state (used by :func:`sims.demos.record_episode`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def render_at_state(
    sim: Any, state: np.ndarray, render: Callable[[], Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``render()`` with ``sim`` set to the flattened ``state`` (time, qpos, qvel); the present state is put back.

    Rendering reads only kinematics, so ``set_state`` + ``forward`` reproduces the past frame exactly.
    """
    now = np.array(sim.get_state().flatten())
    try:
        sim.set_state_from_flattened(state)
        sim.forward()
        return dict(render())
    finally:
        sim.set_state_from_flattened(now)
        sim.forward()
