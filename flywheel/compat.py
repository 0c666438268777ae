"""Runtime fixes this stack needs before certain imports (PyPI torchvision beside CPU torch, LIBERO floor scenes on robosuite 1.5).

Every function here is idempotent and cheap; call it right before the import that needs it.
"""

from __future__ import annotations

import os
import sys

_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_default_env() -> None:
    """Offline, telemetry-free, headless defaults; values the user already set win."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def ensure_torchvision() -> None:
    """Make PyPI's CUDA-built torchvision importable beside the CPU torch wheel.

    torchvision registers fake kernels for ``torchvision::nms``/``qnms`` at import time and fails
    with "operator torchvision::nms does not exist" when the C++ extension cannot be loaded. Declaring
    the two op schemas first lets transforms and models import; ``torchvision.ops`` kernels stay
    unavailable (nothing in this project uses them).
    """
    if "torchvision" in sys.modules:
        return
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - probe: present when torchvision's C++ ops loaded
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")  # noqa: F841 - kept alive below
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already defined by a previous call
            pass
    _LIBS.append(lib)


_LIBS: list = []  # keeps the torch.library fragment alive for the process lifetime
