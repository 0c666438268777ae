"""The cycle's iteration counter and its MLflow parent run.

The counter lives in MLflow, never in memory: every cycle is one parent run tagged ``flywheel.stage=cycle`` and
``flywheel.iteration=k``. A new cycle continues the newest iteration when its run did not finish (a crash), else
starts k + 1. The ``champion`` alias of the registered model is where iteration k starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace

CYCLE_STAGE = "cycle"
CHAMPION = "champion"  # alias of the deployed policy
CHAMPION_PLANNER = "champion-planner"  # alias of its planning model (cycle.planner = "separate"); absent: none


class CycleError(RuntimeError):
    """A cycle cannot start (bad input, missing champion, unreachable service); nothing was written."""


@dataclass(frozen=True)
class Iteration:
    """Where one cycle stands: its number, MLflow parent run, and the champion it starts from."""

    number: int
    parent_run_id: str
    experiment_id: str
    champion: str | None  # models:/NAME/VERSION of the champion at the start, None before the first promotion
    resumed: bool
    previous_demo_digest: str | None  # demo set the previous finished iteration saw
    champion_planner: str | None = None  # models:/NAME/VERSION judging the champion's candidates; None: itself

    @property
    def key(self) -> str:
        return f"cycle/{self.number}"


def _client(cfg: FlywheelConfig, ws: Workspace):
    from mlflow.tracking import MlflowClient

    from tasks.runtime import mlflow_uri

    uri = mlflow_uri(cfg, ws)
    return MlflowClient(uri, registry_uri=uri)


def cycle_suite(cfg: FlywheelConfig) -> str:
    """The cycle trains one model (one ``champion``) per suite."""
    if len(cfg.sim.suites) != 1:
        raise CycleError(f"the cycle trains one model for one suite, got sim.suites={cfg.sim.suites}; run one cycle "
                         f"per suite, each with its own mlflow.model_name")
    return cfg.sim.suites[0]


def champion_uri(cfg: FlywheelConfig, ws: Workspace, alias: str = CHAMPION) -> str | None:
    """``models:/NAME/VERSION`` of the ``champion`` alias (or another ``alias``), or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        version = _client(cfg, ws).get_model_version_by_alias(cfg.mlflow.model_name, alias)
    except MlflowException:
        return None
    return f"models:/{cfg.mlflow.model_name}/{version.version}"


def cycle_runs(cfg: FlywheelConfig, ws: Workspace, experiment_id: str) -> list:
    """Parent runs of every cycle, newest iteration first."""
    runs = _client(cfg, ws).search_runs([experiment_id], filter_string=f"tags.`flywheel.stage` = '{CYCLE_STAGE}'",
                                        max_results=1000)
    return sorted(runs, key=lambda r: int(r.data.tags.get("flywheel.iteration", 0)), reverse=True)


def begin_iteration(cfg: FlywheelConfig, ws: Workspace, demo_digest_tag: str = "flywheel.demo_digest") -> Iteration:
    """Open the parent run of the next iteration (or reopen the unfinished newest one).

    Raises:
        CycleError: iteration k > 1 without a ``champion`` model.
    """
    from tasks.runtime import init_mlflow
    from tasks.tracking import git_commit

    experiment_id = init_mlflow(cfg, ws)
    client = _client(cfg, ws)
    runs = cycle_runs(cfg, ws, experiment_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    previous_digest = finished[0].data.tags.get(demo_digest_tag) if finished else None
    champion = champion_uri(cfg, ws)
    if runs and runs[0].info.status != "FINISHED":
        run = runs[0]
        number = int(run.data.tags["flywheel.iteration"])
        client.update_run(run.info.run_id, status="RUNNING")
        resumed = True
    else:
        number = int(runs[0].data.tags["flywheel.iteration"]) + 1 if runs else 1
        if number > 1 and champion is None:
            raise CycleError(f"iteration {number} needs a champion model, but {cfg.mlflow.model_name!r} has no "
                             f"'champion' alias in {client.tracking_uri}; set one (MlflowClient().set_registered_model_alias) or "
                             f"start a new experiment (mlflow.experiment)")
        run = client.create_run(experiment_id, run_name=f"iteration-{number}",
                                tags={"flywheel.stage": CYCLE_STAGE, "flywheel.iteration": str(number),
                                      "flywheel.key": f"cycle/{number}", "flywheel.profile": cfg.profile,
                                      "git_commit": git_commit()})
        resumed = False
    planner = champion_uri(cfg, ws, CHAMPION_PLANNER) if champion is not None else None
    return Iteration(number, run.info.run_id, experiment_id, champion, resumed, previous_digest, planner)


def end_iteration(cfg: FlywheelConfig, ws: Workspace, it: Iteration, failed: bool = False) -> None:
    _client(cfg, ws).set_terminated(it.parent_run_id, status="FAILED" if failed else "FINISHED")


def _check_champion(cfg: FlywheelConfig, ws: Workspace) -> None:
    """Iteration k > 1 starts from the champion: fail before any work when it is missing (creates nothing)."""
    from tasks.runtime import mlflow_uri

    uri = mlflow_uri(cfg, ws)
    if uri.startswith("sqlite:") and not (ws.mlflow_dir / "mlflow.db").exists() and uri == ws.mlflow_uri:
        return
    exp = _client(cfg, ws).get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return
    runs = cycle_runs(cfg, ws, exp.experiment_id)
    if runs and runs[0].info.status == "FINISHED" and champion_uri(cfg, ws) is None:
        number = int(runs[0].data.tags["flywheel.iteration"]) + 1
        raise CycleError(f"iteration {number} needs a champion model, but {cfg.mlflow.model_name!r} has no "
                         f"'champion' alias in {uri}; set one (MlflowClient().set_registered_model_alias) or "
                         f"use a new mlflow.experiment")


def preflight(cfg: FlywheelConfig, ws: Workspace) -> str:
    """Every check a cycle makes before any work; returns the suite. Raises :class:`CycleError` (or the lake's
    ``LakeError`` / the registry's ``RegistryError``) with one clear message; nothing is written to the lake
    or MLflow."""
    import json
    import os

    from storage_schemas.schemas import SCHEMA_VERSION
    from tasks.registry import check_tracking, tcp_error
    from tasks.runtime import mlflow_uri

    suite = cycle_suite(cfg)
    if suite.startswith("libero_"):
        from sims.libero_runtime import LIBERO_NUM_TASKS

        if suite not in LIBERO_NUM_TASKS:
            raise CycleError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(LIBERO_NUM_TASKS)}")
        n = LIBERO_NUM_TASKS[suite]
        bad = [t for t in cfg.sim.tasks or [] if not 0 <= t < n]
        if bad:
            raise CycleError(f"unknown task id(s) {bad} for {suite} (it has tasks 0-{n - 1})")
    if ws.lake.info_path.exists():
        version = json.loads(ws.lake.info_path.read_text()).get("schema_version")
        if version != SCHEMA_VERSION:
            raise CycleError(f"the lake at {ws.lake.root} has schema v{version}, this code reads v{SCHEMA_VERSION}; "
                             f"upgrade the code or use another --home")
    check_tracking(mlflow_uri(cfg, ws))
    _check_champion(cfg, ws)
    ray_address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if ray_address and ray_address not in ("auto", "local"):
        error = tcp_error(ray_address.replace("ray://", ""))
        if error:
            raise CycleError(f"Ray cluster at {ray_address} does not answer ({error}); start it (ray start --head) "
                             f"or unset RAY_ADDRESS / ray.address")
    prefect_url = os.environ.get("PREFECT_API_URL")
    error = tcp_error(prefect_url, 443 if prefect_url.startswith("https") else 80) if prefect_url else None
    if error:
        raise CycleError(f"Prefect server at {prefect_url} does not answer ({error}); start it (prefect server "
                         f"start) or unset PREFECT_API_URL")
    return suite
