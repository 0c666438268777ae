"""RoboCasa adapter behind :class:`sims.types.Env`, written against RoboCasa's own API (``rpent-robocasa365``).

Suites:

- ``robocasa_<TaskName>`` (e.g. ``robocasa_OpenDrawer``, ``robocasa_PickPlaceCounterToCabinet``): one stock
  RoboCasa task (task_id 0). Needs RoboCasa's kitchen asset zoo (~10 GB: textures, fixtures, objects)
  under ``ROBOCASA_ASSETS_PATH``; without it the constructor fails at once saying what to install.
- ``robocasa_fixture``: an OFFLINE FIXTURE-ONLY kitchen (counters, cabinets, drawers; flat generated
  placeholder textures; no objects) running ``OpenDrawer``, ``CloseDrawer``, ``OpenCabinet``,
  ``CloseCabinet`` (task ids 0-3). It exercises this adapter for real but is NOT the RoboCasa
  benchmark; its instructions are prefixed ``[fixture kitchen, not the benchmark]``.

Layouts: robot ``PandaOmron``; action ``(12,)`` (robosuite composite order: arm OSC delta pose 6,
gripper 1, base 3, torso 1, base mode 1); proprio ``(68,)`` = ``robot0_proprio-state``; cameras
``agentview_left``, ``agentview_right``, ``eye_in_hand`` (``robot0_*``), upright, rendered on request.
RoboCasa has no fixed init states: ``init_state_index`` and ``seed`` together seed the scene sampler.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sims._lazy import MissingPackageError, require_package
from sims.sim_state import RobosuiteCameras
from sims.types import Observation, StepResult, TaskSpec

ROBOCASA_INSTALL_HINT = "rpent-robocasa365==1.0.1 with praxis-robosuite==1.5.2.post1"
ASSETS_HINT = (
    "RoboCasa's kitchen assets (textures, fixtures, objects; ~10 GB) are not installed: download them with "
    "RoboCasa's `python -m robocasa.scripts.download_kitchen_assets` on a machine with internet access and "
    "point ROBOCASA_ASSETS_PATH at the resulting `robocasa/models/assets` folder"
)
ROBOCASA_CAMERAS: dict[str, str] = {
    "agentview_left": "robot0_agentview_left",
    "agentview_right": "robot0_agentview_right",
    "eye_in_hand": "robot0_eye_in_hand",
}
FIXTURE_SUITE = "robocasa_fixture"
FIXTURE_TASKS: tuple[str, ...] = ("OpenDrawer", "CloseDrawer", "OpenCabinet", "CloseCabinet")
FIXTURE_LABEL = "[fixture kitchen, not the benchmark] "
NUM_INIT_STATES = 50


class RoboCasaAssetsMissingError(RuntimeError):
    """A stock RoboCasa task was chosen but the kitchen assets are not installed."""


def robocasa_assets_root() -> str:
    """Where RoboCasa reads assets: ``ROBOCASA_ASSETS_PATH`` or the wheel's bundled (partial) folder."""
    env = os.environ.get("ROBOCASA_ASSETS_PATH")
    if env:
        return env
    spec = __import__("importlib.util").util.find_spec("robocasa")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"`robocasa` is not importable; install {ROBOCASA_INSTALL_HINT}")
    return os.path.join(list(spec.submodule_search_locations)[0], "models", "assets")


def stock_assets_installed(root: str | None = None) -> bool:
    """Whether the full asset zoo is present (object meshes and fixture textures)."""
    root = root or robocasa_assets_root()
    return all(os.path.isdir(os.path.join(root, d)) for d in ("objects", "textures")) and os.path.isdir(
        os.path.join(root, "fixtures", "stoves")
    )


class RoboCasaEnv(RobosuiteCameras):
    """RoboCasa kitchen environment (stock task or offline fixture kitchen), reusable across episodes.

    Args:
        suite: ``robocasa_<TaskName>`` or ``robocasa_fixture``.
        image_size: camera images are ``(image_size, image_size, 3)``.
        max_steps: episode step limit (default 500).
        settle_steps: no-op steps after reset (not counted).
        cache_dir: fixture mode only: where generated textures/asset links go.
        antialias: render as robosuite does (4x multisampling); see :class:`sims.sim_state.RobosuiteCameras`.
        mesh_resolution: coarser visual meshes (:mod:`sims.mesh_detail`); None: as shipped.
    """

    camera_names: tuple[str, ...] = tuple(ROBOCASA_CAMERAS)
    _cameras = ROBOCASA_CAMERAS
    action_dim: int = 12
    proprio_dim: int = 68

    def __init__(
        self,
        suite: str,
        image_size: int = 128,
        *,
        max_steps: int = 500,
        settle_steps: int = 10,
        cache_dir: str | None = None,
        antialias: bool = True,
        mesh_resolution: int | None = None,
    ) -> None:
        if not suite.startswith("robocasa_") or suite == "robocasa_":
            raise ValueError(f"not a RoboCasa suite: {suite!r} (use robocasa_<TaskName> or {FIXTURE_SUITE})")
        self.suite = suite
        self.image_size = int(image_size)
        self.antialias = bool(antialias)
        self.mesh_resolution = mesh_resolution
        self.max_steps = int(max_steps)
        self.settle_steps = int(settle_steps)
        self.fixture_mode = suite == FIXTURE_SUITE
        self.tasks: tuple[str, ...] = FIXTURE_TASKS if self.fixture_mode else (suite[len("robocasa_") :],)
        self._cache_dir = cache_dir
        if not self.fixture_mode:
            self._check_stock_task(self.tasks[0])
        self._env: Any = None
        self._task_id: int | None = None
        self._steps, self._done, self._success = 0, True, False
        self.episode_index = 0
        self.last_reset_s = 0.0
        self._instruction = ""

    # ------------------------------------------------------------------ checks
    def _check_stock_task(self, name: str) -> None:
        require_package("robocasa", install_hint=ROBOCASA_INSTALL_HINT)
        root = robocasa_assets_root()
        if not stock_assets_installed(root):
            raise RoboCasaAssetsMissingError(
                f"RoboCasa stock task {name!r} needs the kitchen assets, not found under {root!r}. {ASSETS_HINT}. "
                f"Offline, use suite {FIXTURE_SUITE!r} (fixture-only kitchen, not the benchmark)."
            )
        registry = self._registry()
        if name not in registry:
            raise ValueError(f"unknown RoboCasa task {name!r}; e.g. {sorted(registry)[:12]} ...")

    @staticmethod
    def _registry() -> Mapping[str, type]:
        with contextlib.redirect_stdout(io.StringIO()):
            require_package("robocasa", install_hint=ROBOCASA_INSTALL_HINT)
            kitchen = require_package("robocasa.environments.kitchen.kitchen", install_hint=ROBOCASA_INSTALL_HINT)
        return kitchen.REGISTERED_KITCHEN_ENVS

    # ------------------------------------------------------------------ Env API
    def task_spec(self, task_id: int) -> TaskSpec:
        if not 0 <= task_id < len(self.tasks):
            raise ValueError(f"task_id {task_id} out of range for {self.suite} ({len(self.tasks)} tasks)")
        name = self.tasks[task_id]
        text = (
            self._instruction if (self._task_id == task_id and self._instruction) else _default_instruction(name)
        )
        if self.fixture_mode and not text.startswith(FIXTURE_LABEL):
            text = FIXTURE_LABEL + text
        return TaskSpec(self.suite, task_id, text, self.max_steps, NUM_INIT_STATES)

    def reset(self, task_id: int, init_state_index: int, seed: int) -> Observation:
        """Sample a kitchen scene from (seed, init_state_index), settle, return the first observation."""
        t0 = time.perf_counter()
        self.task_spec(task_id)  # validates task_id
        if self._env is None or self._task_id != task_id:
            self._build(task_id, seed)
        env = self._env
        env.rng = np.random.default_rng([int(seed), int(init_state_index)])
        with contextlib.redirect_stdout(io.StringIO()):
            env.reset()
        meta = env.get_ep_meta() if hasattr(env, "get_ep_meta") else {}
        self._instruction = str(meta.get("lang", "")) or _default_instruction(self.tasks[task_id])
        noop = np.zeros(self.action_dim)
        noop[-1] = -1.0  # base mode: arm control
        for _ in range(self.settle_steps):
            env.step(noop)
        self._steps, self._done, self._success = 0, False, False
        self.episode_index += 1
        self.last_reset_s = time.perf_counter() - t0
        return self._observation(render=True)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        if self._env is None or self._done:
            raise RuntimeError("episode is over (or never started): call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        self._last_obs = self._env.step(np.clip(action, -1.0, 1.0))[0]
        self._steps += 1
        self._success = bool(self._env._check_success())
        truncated = not self._success and self._steps >= self.max_steps
        self._done = self._success or truncated
        return StepResult(
            self._observation(render), self._done, self._success, {"t": self._steps, "truncated": truncated}
        )

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
        self._env, self._task_id = None, None

    # ------------------------------------------------------------------ internals
    def _build(self, task_id: int, seed: int) -> None:
        self.close()
        name = self.tasks[task_id]
        kwargs: dict[str, Any] = {}
        if self.fixture_mode:
            from sims.robocasa_fixture import fixture_kitchen_kwargs, prepare_fixture_assets

            prepare_fixture_assets(self._cache_dir)
            kwargs = fixture_kitchen_kwargs()

        os.environ.setdefault("MUJOCO_GL", "egl")
        cls = self._registry()[name]
        with contextlib.redirect_stdout(io.StringIO()):
            self._env = cls(
                robots="PandaOmron",
                use_camera_obs=False,
                has_renderer=False,
                has_offscreen_renderer=True,
                ignore_done=True,
                camera_names=list(ROBOCASA_CAMERAS.values()),
                camera_heights=self.image_size,
                camera_widths=self.image_size,
                renderer="mujoco",
                seed=int(seed),
                **kwargs,
            )
        if self.fixture_mode:  # no objects: the object zoo is what is missing offline (instance-level override)
            self._env._get_obj_cfgs = lambda: []
        self._task_id = task_id
        self._last_obs: Mapping[str, np.ndarray] = {}

    def _observation(self, render: bool) -> Observation:
        obs = getattr(self, "_last_obs", None) or self._env._get_observations(force_update=True)
        if not self._steps:  # after reset the cached dict is stale
            obs = self._env._get_observations(force_update=True)
        proprio = np.asarray(obs["robot0_proprio-state"], dtype=np.float32)
        return Observation(images=self.render() if render else {}, proprio=proprio, object_state=None)


def _default_instruction(task: str) -> str:
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in task).strip()
    return words
