"""Connections to the embedded services: local Ray (or ``RAY_ADDRESS``), MLflow on SQLite, Prefect.

Everything defaults to the workspace (``$FLYWHEEL_HOME``); scaling out is configuration:
``RAY_ADDRESS`` joins a cluster, ``MLFLOW_TRACKING_URI``/``mlflow.tracking_uri`` points at a server,
``PREFECT_API_URL`` at a Prefect server.
"""

from __future__ import annotations

import os

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace

# Each Ray worker runs torch/MuJoCo single-threaded: two workers on two cores must not oversubscribe.
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: Ray Train's controller polls workers every 2 s by default and a report waits
# for that poll; 0.2 s keeps reports every few steps from throttling training (it must reach the controller too).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MUJOCO_GL": "egl",
              "PYOPENGL_PLATFORM": "egl", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
              "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")}


def use_cluster_token() -> None:
    """Joining a cluster started with ``ray start`` (token authentication is Ray's default there): Ray sends the
    token only in token mode, and switches to it by itself only for ``address="auto"``. Do what it does then: token
    mode when a token is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and the
    user chose no ``RAY_AUTH_MODE``."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own defaults apply
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def init_ray(cfg: FlywheelConfig, ws: Workspace, num_cpus: int | None = None):
    """Start (or join) Ray once per process; returns the ``ray`` module."""
    import ray

    if ray.is_initialized():
        return ray
    env_vars = dict(WORKER_ENV)
    for key in ("LIBERO_CONFIG_PATH", "FLYWHEEL_HOME", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
                "ROBOCASA_ASSETS_PATH"):
        if os.environ.get(key):
            env_vars[key] = os.environ[key]
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": env_vars}
    if address:
        use_cluster_token()
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=cfg.ray.log_to_driver)
    else:
        ws.ray_temp.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=num_cpus or cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False,
                 _temp_dir=str(ws.ray_temp), runtime_env=runtime_env, log_to_driver=cfg.ray.log_to_driver,
                 configure_logging=True, logging_level="warning")
    return ray


def mlflow_uri(cfg: FlywheelConfig, ws: Workspace) -> str:
    return cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ws.mlflow_uri


def init_mlflow(cfg: FlywheelConfig, ws: Workspace) -> str:
    """Point MLflow at the tracking store and make sure the project's experiment exists; returns its id."""
    import mlflow

    uri = mlflow_uri(cfg, ws)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        location = ws.mlflow_artifacts.as_uri() if uri.startswith("sqlite:") else None
        return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)
    return exp.experiment_id


def load_workspace(profile: str, config_path: str | None, overrides: list[str] | None,
                   home: str | None = None) -> tuple[FlywheelConfig, Workspace]:
    """Config + workspace inside a flow (which may run in a Prefect worker, not under the CLI): ``home`` wins over
    ``$FLYWHEEL_HOME``, which wins over ``./flywheel-home``; the environment every stage expects is exported."""
    from pathlib import Path

    from flywheel.compat import set_default_env
    from flywheel.config import load_config

    set_default_env()
    cfg = load_config(profile, config_path, overrides or [])
    ws = Workspace.from_env(Path(home) if home else None).ensure()
    ws.export_env()
    return cfg, ws
