"""Lazy, side-effect-free access to heavy optional packages (style of lerobot's ``require_package``)."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingPackageError(ImportError):
    """A simulator package this adapter needs is not importable; the message says what to install."""


def require_package(module: str, *, install_hint: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingPackageError` naming what to install.

    Args:
        module: dotted module name, e.g. ``"libero.libero"``.
        install_hint: the distribution(s) to install, e.g. ``"rpent-libero==0.2.0"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingPackageError(
            f"`{module}` is not importable ({exc}); install {install_hint} (see the README: bash scripts/setup.sh installs the locked environment)"
        ) from exc
