"""The nightly cycle end to end on the ``smoke`` profile (slow: minutes per iteration on 2 cores).

One test drives the real CLI: iteration 1 is killed with SIGKILL during its rollouts and re-run (no duplicate, no
missing episode), then iteration 2 runs; MLflow then holds both iterations as parent runs with child runs, the
metrics and a champion decision each; the lake holds evaluations on held-out init states only.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.lake import lake_sql

ROOT = Path(__file__).resolve().parents[2]
TRAIN_INIT_STATES = 40  # sim.heldout_init_states = 10 of LIBERO's 50
ENV = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"}  # the suite quiets Prefect; these checks read its log


def _cli(home: Path, log: Path, *args: str) -> subprocess.Popen:
    """The CLI in its own session, output to ``log`` (a pipe nobody reads would block it once full)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "flywheel.cli.app", *args, "--home", str(home)], cwd=ROOT,
                                env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _sql(home: Path, sql: str) -> list[tuple]:
    return lake_sql(home / "lake", sql)


def _rollouts_landed(home: Path) -> int:
    if not list((home / "lake").glob("episodes/source=rollout/**/*.parquet")):
        return 0
    return _sql(home, "SELECT count(*) FROM episodes WHERE source = 'rollout' AND iteration = 1")[0][0]


def _kill_tree(proc: subprocess.Popen, home: Path) -> None:
    from flywheel.workspace import Workspace

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Ray's daemons and orphaned agents of that workspace (its temp dir is in their command lines)
    subprocess.run(["pkill", "-9", "-f", str(Workspace(home).ray_temp)], check=False)
    time.sleep(2)


@pytest.mark.slow
def test_two_cycles_with_a_crash_during_rollouts(tmp_path):
    home = tmp_path / "home"
    args = ("cycle", "--profile", "smoke", "--set", "rollout.episodes_per_task=3")  # 1 model + 2 noisy-expert episodes
    log = tmp_path / "killed.log"
    proc = _cli(home, log, *args)
    deadline = time.time() + 1500
    while _rollouts_landed(home) < 1:
        assert proc.poll() is None, log.read_text()[-4000:]
        assert time.time() < deadline
        time.sleep(0.5)
    _kill_tree(proc, home)
    landed = _rollouts_landed(home)
    assert 1 <= landed < 3  # killed mid-stage

    out = subprocess.run([sys.executable, "-m", "flywheel.cli.app", *args, "--home", str(home)], cwd=ROOT,
                         env=ENV, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    logs = out.stdout + out.stderr
    assert "Iteration 1" in out.stdout and "already in the lake" in logs
    assert logs.count("Cached(type=COMPLETED)") >= 2  # demos and fine-tuning finished before the kill: skipped
    n, distinct = _sql(home, "SELECT count(*), count(DISTINCT episode_id) FROM episodes "
                             "WHERE source = 'rollout' AND iteration = 1")[0]
    assert n == distinct == 3  # nothing duplicated, nothing missing

    out = subprocess.run([sys.executable, "-m", "flywheel.cli.app", *args, "--home", str(home)], cwd=ROOT,
                         env=ENV, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Iteration 2" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout

    # the lake: held-out evaluation only from held-out init states, training data never from them
    assert _sql(home, "SELECT min(init_state_index) FROM episodes WHERE source = 'eval'")[0][0] >= TRAIN_INIT_STATES
    assert _sql(home, "SELECT max(init_state_index) FROM episodes WHERE source <> 'eval'")[0][0] < TRAIN_INIT_STATES
    evals = _sql(home, "SELECT iteration, planning, count(*) FROM evaluations GROUP BY ALL ORDER BY ALL")
    assert {(i, p) for i, p, _ in evals} == {(1, False), (1, True), (2, False), (2, True)}
    # planning after refinement: the base policy judged by the refined planning model (cycle.planner=separate)
    pairs = _sql(home, "SELECT DISTINCT policy_version FROM evaluations WHERE planning AND iteration = 1 "
                       "AND policy_version LIKE '%+planner:%'")
    assert len(pairs) == 1 and pairs[0][0].endswith("/v2"), pairs

    # MLflow: one parent run per iteration, child runs per stage, metrics and a decision each
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("cosmos-policy-flywheel").experiment_id
    parents = {int(r.data.tags["flywheel.iteration"]): r for r in
               client.search_runs([exp], filter_string="tags.`flywheel.stage` = 'cycle'")}
    assert sorted(parents) == [1, 2] and all(r.info.status == "FINISHED" for r in parents.values())
    for k, parent in parents.items():
        m = parent.data.metrics
        for key in ("eval/success_rate", "eval/success_rate_planning", "eval/success_rate_base", "wm/mse",
                    "wm/mse_base", "eval/task_0/success_rate", "duration/total_s", "promote/p_value"):
            assert key in m, (k, key, sorted(m))
        assert parent.data.tags["flywheel.decision"] and parent.data.tags["flywheel.champion"].startswith("models:/")
        children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        stages = {c.data.tags.get("flywheel.stage") for c in children}
        assert {"demos", "rollouts", "evaluate", "promote", "train"} <= stages, stages
        plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
        assert {"plots/success_per_task.png", "plots/value_calibration.png", "plots/success_by_iteration.png"} <= plots
    # iteration 2 started from the champion: no new fine-tuning, one refine run
    assert parents[2].data.tags["flywheel.base_model"] == parents[1].data.tags["flywheel.champion"]
    assert client.get_model_version_by_alias("cosmos-policy", "champion")


@pytest.mark.slow
def test_prefect_deploy_registers_the_nightly_deployment(tmp_path):
    """``prefect deploy --all`` with the project's prefect.yaml on a local Prefect server."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and server.poll() is None
            time.sleep(1)
        run = lambda *a: subprocess.run([prefect, *a], env=env, cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                        timeout=300)
        assert run("work-pool", "create", "flywheel", "--type", "process").returncode == 0
        out = run("--no-prompt", "deploy", "--all")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        listed = run("deployment", "ls").stdout
        assert "cycle/nightly" in listed and "evaluate/evaluate" in listed
        schedules = run("deployment", "schedule", "ls", "cycle/nightly").stdout
        assert "0 2 * * *" in schedules
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
