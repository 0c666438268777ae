"""Shared fixtures for sims tests: LIBERO writes its config.yaml into a temp dir, never ~/.libero."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _libero_config_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("LIBERO_CONFIG_PATH", str(tmp_path_factory.mktemp("libero_config")))
    os.environ.setdefault("MUJOCO_GL", "egl")
