"""The ``flywheel`` CLI end to end (in-process): help, bad input exit codes and one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from flywheel.cli.app import app
from tests.fixtures.datasets import make_hdf5

runner = CliRunner()

COMMANDS = [[], ["config"], ["config", "show"], ["doctor"], ["ingest"], ["query"], ["report"], ["model"],
            ["model", "init"], ["model", "latents"], ["train"], ["cycle"], ["serve"], ["rollout"]]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def _error_line(res):
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), res.output
    return lines[-1]


def test_ingest_query_report_flow(home, tmp_path):
    f = make_hdf5(tmp_path / "a.hdf5", [6, 8])
    res = runner.invoke(app, ["ingest", str(f), "--profile", "smoke"])
    assert res.exit_code == 0, res.output
    assert "episodes: 2" in res.output and "steps: 14" in res.output
    res = runner.invoke(app, ["query", "select count(*) as n, sum(length) as steps from episodes", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"n": 2, "steps": 14}]
    res = runner.invoke(app, ["query", "select suite from episodes limit 1", "-f", "csv"])
    assert res.output.splitlines() == ['"suite"', '"libero_object"']
    res = runner.invoke(app, ["report", "--format", "json"])
    assert res.exit_code == 0 and "Wilson" in res.output


@pytest.mark.parametrize(("argv", "needle"), [
    (["ingest", "/definitely/missing"], "no such file"),
    (["query", "SELEC nonsense"], "SQL failed"),
    (["query", "select 1", "--format", "xml"], "--format"),
    (["config", "show", "--profile", "huge"], "unknown profile 'huge'"),
    (["config", "show", "--set", "train.nope=1"], "unknown config key: train.nope"),
])
def test_bad_input_one_line_nonzero(home, argv, needle):
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert needle in _error_line(res)


def test_ingest_bad_sources(home, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    res = runner.invoke(app, ["ingest", str(junk)])
    assert res.exit_code == 2 and "neither a LeRobot" in _error_line(res)
    res = runner.invoke(app, ["ingest", str(make_hdf5(tmp_path / "n.hdf5", [4], with_actions=False))])
    assert res.exit_code == 2 and "no 'actions'" in _error_line(res)
    assert runner.invoke(app, ["ingest", str(make_hdf5(tmp_path / "a.hdf5", [4]))]).exit_code == 0
    res = runner.invoke(app, ["ingest", str(make_hdf5(tmp_path / "b.hdf5", [4], action_dim=6, seed=2))])
    assert res.exit_code == 2 and "action_dim=6" in _error_line(res)
    res = runner.invoke(app, ["query", "select count(*) as n from episodes", "-f", "json"])
    assert json.loads(res.output) == [{"n": 1}]


def test_doctor_fast_checks(home):
    res = runner.invoke(app, ["doctor", "--skip", "ray,prefect,mlflow"])
    assert res.exit_code == 0, res.output
    for name in ("imports", "mujoco-egl", "libero-assets", "lake"):
        assert f"ok   {name}" in res.output


def test_doctor_all_checks_for_real(home):
    """Ray start, an ephemeral Prefect flow run and the MLflow SQLite store, as a user's first hour would."""
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    for name in ("imports", "mujoco-egl", "libero-assets", "lake", "mlflow", "ray", "prefect"):
        assert f"ok   {name}" in res.output
    assert (home / "mlflow" / "mlflow.db").exists()


def test_doctor_reports_failure_and_fix(home, monkeypatch):
    import flywheel.doctor

    def unwritable(ws):
        raise PermissionError(f"[Errno 13] Permission denied: '{ws.lake.root}'")

    monkeypatch.setattr(flywheel.doctor, "_lake", unwritable)
    res = runner.invoke(app, ["doctor", "--skip", "imports,mujoco-egl,libero-assets,mlflow,ray,prefect"])
    assert res.exit_code == 1
    assert "FAIL lake" in res.output and "Permission denied" in res.output and "fix: make" in res.output


@pytest.mark.parametrize("view", ["episodes", "steps", "evaluations"])
def test_query_every_column_type_in_every_format(home, tmp_path, view):
    """select * of each view: CSV holds lists/maps as JSON text and images as base64, JSON parses, Parquet
    round-trips the rows."""
    import base64
    import csv
    import io

    import pyarrow.parquet as pq

    from tests.fixtures.lake import write_synthetic_episodes

    write_synthetic_episodes(home / "lake", demos=2, length=12, image_size=16, image_every=6)
    sql = f"select * from {view}"
    res = runner.invoke(app, ["query", sql, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    res = runner.invoke(app, ["query", sql, "--format", "csv"])
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.output)))
    assert len(parsed) == len(rows)
    out = tmp_path / f"{view}.parquet"
    res = runner.invoke(app, ["query", sql, "--format", "parquet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).num_rows == len(rows)
    if view == "steps":
        assert len(rows) == 24 and isinstance(rows[0]["proprio"], list) and len(rows[0]["proprio"]) == 9
        assert json.loads(parsed[0]["action"]) == pytest.approx(rows[0]["action"])
        pngs = json.loads(parsed[0]["images"])  # map camera -> base64 PNG
        assert base64.b64decode(pngs["agentview"])[:4] == b"\x89PNG"
    if view == "episodes":
        assert len(rows) == 2 and {r["source"] for r in rows} == {"demo"}
    res = runner.invoke(app, ["query", sql, "--format", "parquet"])
    assert res.exit_code == 2 and "--out" in _error_line(res)


def test_home_flag_wins_over_the_environment(home, tmp_path, monkeypatch):
    """One rule for every command and flow: --home, else $FLYWHEEL_HOME, else ./flywheel-home."""
    import os

    from tasks.runtime import load_workspace

    other = (tmp_path / "other").resolve()
    res = runner.invoke(app, ["config", "show", "--home", str(other)])
    assert res.exit_code == 0 and f"home: {other}" in res.output
    assert os.environ["FLYWHEEL_HOME"] == str(other)  # flows and Ray workers started next see the same home
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    assert load_workspace("smoke", None, None, None)[1].home == home.resolve()
    assert load_workspace("smoke", None, None, str(other))[1].home == other  # what flows use
    monkeypatch.delenv("FLYWHEEL_HOME")
    monkeypatch.chdir(tmp_path)
    assert load_workspace("smoke", None, None, None)[1].home == (tmp_path / "flywheel-home").resolve()
