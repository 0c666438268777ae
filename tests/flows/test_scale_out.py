"""Scale-out is configuration only: a ``smoke`` cycle against a Prefect server and an MLflow tracking server on
127.0.0.1 and a Ray head (``ray start --head`` on this machine, joined through ``RAY_ADDRESS``) (slow).

Untested here: separate machines (every process shares this machine's disk; on a real cluster Ray Train's
storage, ``train.storage_path``, must be shared storage)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server for {url} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.mark.slow
def test_smoke_cycle_on_servers(tmp_path):
    import ray

    ray.shutdown()  # no in-process Ray instance of an earlier test may be joined instead
    p_port, m_port, r_port = _port(), _port(), _port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "RAY_USAGE_STATS_ENABLED": "0"}
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "FLYWHEEL_HOME"):
        env.pop(var, None)
    procs = []
    ray_temp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's socket paths have a length limit

    def start(*cmd):
        log = (tmp_path / f"{Path(cmd[0]).name}.log").open("w")  # read when a server does not come up
        procs.append(subprocess.Popen(list(cmd), env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        return procs[-1]

    try:
        prefect = start(str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p_port))
        mlflow = start(str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(m_port),
                       "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                       "--artifacts-destination", str(tmp_path / "mlartifacts"), "--workers", "1")
        # Ray resolves a 127.0.0.1 address to the node's own IP, so the head listens on the node address (this
        # machine) and RAY_ADDRESS=127.0.0.1:PORT reaches it.
        head = start(str(BIN / "ray"), "start", "--head", "--block", "--port", str(r_port), "--num-cpus", "3",
                     "--include-dashboard", "false", "--temp-dir", ray_temp)
        _wait_http(f"http://127.0.0.1:{p_port}/api/health", prefect)
        _wait_http(f"http://127.0.0.1:{m_port}/health", mlflow)
        deadline = time.time() + 120
        while True:
            assert head.poll() is None and time.time() < deadline, (tmp_path / "ray.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", r_port), 2).close()
                break
            except OSError:
                time.sleep(1)
        services = {"PREFECT_API_URL": f"http://127.0.0.1:{p_port}/api", "MLFLOW_TRACKING_URI":
                    f"http://127.0.0.1:{m_port}", "RAY_ADDRESS": f"127.0.0.1:{r_port}"}
        home = tmp_path / "home"
        out = subprocess.run([sys.executable, "-m", "flywheel.cli.app", "cycle", "--profile", "smoke", "--home",
                              str(home)], cwd=ROOT, env={**env, **services}, capture_output=True, text=True,
                             timeout=2400)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

        # MLflow server: the iteration's parent run, its metrics, the champion
        from mlflow.tracking import MlflowClient

        client = MlflowClient(services["MLFLOW_TRACKING_URI"], registry_uri=services["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("cosmos-policy-flywheel").experiment_id
        parents = client.search_runs([exp], filter_string="tags.`flywheel.stage` = 'cycle'")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert "eval/success_rate_planning" in parents[0].data.metrics
        assert client.get_model_version_by_alias("cosmos-policy", "champion")
        assert not (home / "mlflow" / "mlflow.db").exists()  # nothing went to the embedded store
        # Prefect server: the cycle's flow run and its task runs
        runs = subprocess.run([str(BIN / "prefect"), "flow-run", "ls", "--limit", "5"], env={**env, **services, "COLUMNS": "300"},
                              capture_output=True, text=True, timeout=120).stdout
        assert "cycle" in runs and "COMPLETED" in runs, runs
        # Ray head: the cycle joined it (no local instance under the workspace) and ran a job there
        from flywheel.workspace import Workspace

        assert not Workspace(home).ray_temp.exists()
        from tasks.runtime import use_cluster_token

        use_cluster_token()
        ray.init(address=services["RAY_ADDRESS"])
        try:
            from ray._private.state import jobs

            assert len(jobs()) >= 2  # the cycle's driver(s) + this check
        finally:
            ray.shutdown()
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", ray_temp], check=False)
        subprocess.run(["pkill", "-9", "-f", str(tmp_path)], check=False)
