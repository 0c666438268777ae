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

    The adapter sets ``self.image_size``, ``self.antialias`` and a ``_cameras`` mapping (our camera name ->
    robosuite camera).

    ``antialias=True`` renders as robosuite does (4x multisampling in a 640x480 offscreen buffer, the look of the
    LIBERO datasets). ``antialias=False`` renders without multisampling into an ``image_size`` buffer: on a machine
    without a GPU (Mesa's software rasteriser) a 64 px LIBERO frame then costs about half as much
    (``benchmarks/bench_render.py``), with slightly harder edges. Demos and evaluation must use the same setting.
    """

    _env: Any
    _cameras: Mapping[str, str]
    image_size: int
    antialias: bool = True
    mesh_resolution: int | None = None  # visual meshes clustered on this grid (sims.mesh_detail); None: as shipped
    _simplified_model: Any = None  # the MjModel whose visual meshes were simplified
    _robosuite_offscreen: tuple[int, int, int] | None = None  # (samples, width, height) robosuite chose

    def _configure_offscreen(self, sim: Any) -> None:
        """Match robosuite's offscreen context to ``antialias`` (checked on every render: robosuite may build a
        new context on a hard reset). Without antialiasing: one sample per pixel in an ``image_size`` buffer; with
        it, the settings robosuite built the context with (remembered when first seen)."""
        ctx = getattr(sim, "_render_context_offscreen", None)
        if ctx is None:
            return
        con = ctx.con
        now = (con.offSamples, con.offWidth, con.offHeight)
        if self._robosuite_offscreen is None:
            self._robosuite_offscreen = now
        want = self._robosuite_offscreen if self.antialias else (0, self.image_size, self.image_size)
        rebuild = False
        if self.mesh_resolution is not None and self._simplified_model is not sim.model._model:
            from sims.mesh_detail import simplify_visual_meshes

            simplify_visual_meshes(sim.model._model, self.mesh_resolution)
            self._simplified_model = sim.model._model
            rebuild = True  # the context holds the meshes it uploaded
        if now == want and not rebuild:
            return
        ctx.gl_ctx.make_current()
        sim.model.vis.quality.offsamples = want[0]
        if now[1:] == want[1:]:
            ctx.update_offscreen_size(want[1], want[2] + 1)  # only a new size rebuilds robosuite's context
        ctx.update_offscreen_size(want[1], want[2])

    def render(self) -> dict[str, np.ndarray]:
        """Render every camera now: ``name -> (H, W, 3)`` uint8, upright."""
        if self._env is None:
            raise RuntimeError("no scene built yet: call reset() first")
        sim, s = self._env.sim, self.image_size
        self._configure_offscreen(sim)
        ctx = getattr(sim, "_render_context_offscreen", None)
        if ctx is not None:  # robosuite renders into whichever GL context is current (several envs per process)
            ctx.gl_ctx.make_current()
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
