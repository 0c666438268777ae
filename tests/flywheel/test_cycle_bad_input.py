"""``flywheel cycle``: bad input fails before any work with one clear line and leaves the lake and MLflow as they
were."""

import json
import time

import pytest
from typer.testing import CliRunner

from flywheel.cli.app import app

runner = CliRunner()


def _snapshot(home):
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and "mlflow" not in p.parts)
    db = home / "mlflow" / "mlflow.db"
    runs = []
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = sorted(r.info.run_id for r in client.search_runs(exps)) if exps else []
    return [f for f in files if "lake" in f], runs


def _fail(home, *args):
    before = _snapshot(home)
    t0 = time.perf_counter()
    result = runner.invoke(app, ["cycle", "--profile", "smoke", "--home", str(home), *args])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2, result.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert _snapshot(home) == before
    assert time.perf_counter() - t0 < 60
    return lines[0]


def test_unknown_suite(home):
    assert "unknown LIBERO suite 'libero_nope'" in _fail(home, "--set", "sim.suites=[libero_nope]")


def test_unknown_task_id(home):
    assert "unknown task id(s) [12]" in _fail(home, "--set", "sim.tasks=[0, 12]")


def test_non_positive_counts(home):
    assert "rollout.episodes_per_task" in _fail(home, "--set", "rollout.episodes_per_task=0")
    assert "eval.episodes_per_task" in _fail(home, "--set", "eval.episodes_per_task=-1")
    assert "--iterations" in _fail(home, "--iterations", "0")


def test_two_suites_in_one_cycle(home):
    assert "one suite" in _fail(home, "--set", "sim.suites=[libero_object, libero_goal]")


def test_lake_from_newer_code(home):
    from storage_schemas import LakeWriter

    writer = LakeWriter(home / "lake")
    writer.init()
    info = json.loads(writer.layout.info_path.read_text())
    writer.layout.info_path.write_text(json.dumps({**info, "schema_version": 99}))
    assert "schema v99" in _fail(home)


@pytest.mark.parametrize("setting, words", [
    ("mlflow.tracking_uri=http://127.0.0.1:9", "unreachable"),
    ("ray.address=127.0.0.1:9", "Ray cluster at 127.0.0.1:9 does not answer"),
])
def test_services_that_do_not_answer(home, setting, words):
    assert words in _fail(home, "--set", setting)


def test_prefect_server_that_does_not_answer(home, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert "Prefect server at http://127.0.0.1:9/api does not answer" in _fail(home)


def test_missing_champion_after_the_first_iteration(home):
    from mlflow.tracking import MlflowClient

    from flywheel.config import load_config
    from flywheel.workspace import Workspace
    from tasks.runtime import init_mlflow

    ws = Workspace(home).ensure()
    cfg = load_config("smoke")
    uri = ws.mlflow_uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = init_mlflow(cfg, ws)
    client = MlflowClient(uri, registry_uri=uri)
    run = client.create_run(exp, tags={"flywheel.stage": "cycle", "flywheel.iteration": "1"})
    client.set_terminated(run.info.run_id)
    assert "iteration 2 needs a champion model" in _fail(home)
