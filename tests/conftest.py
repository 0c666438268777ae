"""Test-wide set-up: an isolated workspace per test session, offline env vars, LIBERO config in tmp."""

from __future__ import annotations

import os

import pytest

from flywheel.compat import set_default_env


def pytest_configure(config: pytest.Config) -> None:
    set_default_env()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    # Prefect's temporary server logs at interpreter exit, after CliRunner closed its streams: keep it quiet.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session", autouse=True)
def _libero_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("LIBERO_CONFIG_PATH", str(tmp_path_factory.mktemp("libero-config")))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ``$FLYWHEEL_HOME`` for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(h))
    for var in ("PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return h
