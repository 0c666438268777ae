"""Camera rendering shared by the robosuite-based adapters, and rewinding an ``MjSim`` to render a past state."""

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


class RobosuiteCameras:
    """Mixin for adapters over a robosuite env held in ``self._env``: on-demand upright renders and rewinds.

    The adapter sets ``self.image_size`` and a ``_cameras`` mapping (our camera name -> robosuite camera).
    """

    _env: Any
    _cameras: Mapping[str, str]
    image_size: int

    def render(self) -> dict[str, np.ndarray]:
        """Render every camera now: ``name -> (H, W, 3)`` uint8, upright."""
        if self._env is None:
            raise RuntimeError("no scene built yet: call reset() first")
        sim, s = self._env.sim, self.image_size
        return {name: np.ascontiguousarray(sim.render(camera_name=cam, width=s, height=s)[::-1])
                for name, cam in self._cameras.items()}

    def save_state(self) -> np.ndarray:
        """Cheap copy of the physics state (time, qpos, qvel) for :meth:`render_state`."""
        if self._env is None:
            raise RuntimeError("no scene built yet: call reset() first")
        return np.array(self._env.sim.get_state().flatten())

    def render_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Render every camera as the scene was at ``state`` (from :meth:`save_state`), then restore the present."""
        return render_at_state(self._env.sim, state, self.render)
