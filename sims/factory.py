"""``make_env``: pick the simulator adapter from the suite name."""

from __future__ import annotations

from sims.libero_runtime import LIBERO_SUITES
from sims.types import Env

ROBOCASA_PREFIX = "robocasa_"


def valid_suites() -> tuple[str, ...]:
    """Suite names :func:`make_env` accepts (``robocasa_<TaskName>`` selects a stock RoboCasa task)."""
    return (*LIBERO_SUITES, "robocasa_fixture", "robocasa_<TaskName>")


def make_env(suite: str, image_size: int = 128, **kwargs: object) -> Env:
    """Build the adapter for ``suite``: ``libero_*`` -> :class:`LiberoEnv`, ``robocasa_*`` -> RoboCasa.

    Args:
        suite: a LIBERO suite (``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``,
            ``libero_90``), ``robocasa_fixture`` (offline fixture-only kitchen, NOT the benchmark) or
            ``robocasa_<TaskName>`` / ``robocasa_stock`` (needs RoboCasa's kitchen assets).
        image_size: square camera image size.
        **kwargs: forwarded to the adapter's constructor.

    Raises:
        ValueError: unknown suite (the message lists the valid ones).
    """
    if suite in LIBERO_SUITES:
        from sims.libero_env import LiberoEnv

        return LiberoEnv(suite, image_size, **kwargs)  # type: ignore[arg-type]
    if suite.startswith(ROBOCASA_PREFIX):
        from sims.robocasa_env import RoboCasaEnv

        return RoboCasaEnv(suite, image_size, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(valid_suites())}")
