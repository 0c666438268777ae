"""``flywheel train``: bad inputs fail before any work with one clear line; a smoke training registers a version."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli.app import app
from tests.fixtures.checkpoints import make_tiny_checkpoint
from tests.fixtures.lake import write_synthetic_episodes

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _mlflow_state(home: Path) -> tuple[list, list]:
    """(runs, registered models) in the workspace's MLflow store (empty when it was never created)."""
    db = home / "mlflow" / "mlflow.db"
    if not db.exists():
        return [], []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else [], client.search_registered_models()


def _fail(args, home):
    result = runner.invoke(app, ["train", "--profile", "smoke", *args])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code != 0, result.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    runs, models = _mlflow_state(home)
    assert models == [] and all(r.info.status != "RUNNING" for r in runs)
    return lines[0]


@pytest.fixture
def demo_home(home):
    write_synthetic_episodes(home / "lake", demos=2, successes=1, failures=1)
    return home


def test_no_demos_in_the_lake(home):
    assert "add demonstrations first" in _fail([], home)


def test_no_demos_of_the_suite(demo_home):
    assert "no demonstrations of suite 'libero_spatial'" in _fail(["--suite", "libero_spatial"], demo_home)


def test_empty_selection(demo_home):
    assert "selection is empty" in _fail(["--where", "task_id = 42"], demo_home)


def test_steps_zero(demo_home):
    assert "train.steps" in _fail(["--set", "train.steps=0"], demo_home)


def test_unreachable_tracking_server(demo_home):
    t0 = time.perf_counter()
    line = _fail(["--set", "mlflow.tracking_uri=http://127.0.0.1:9"], demo_home)
    assert "unreachable" in line and time.perf_counter() - t0 < 30


def test_corrupt_init_checkpoint(demo_home, tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "cannot load the checkpoint" in _fail(["--init", str(ckpt)], demo_home)


def test_init_with_another_layout(demo_home, tmp_path):
    from cosmos_policy.checkpoint_io import save_untrained_checkpoint
    from cosmos_policy.latent_layout import robocasa_layout

    ckpt = save_untrained_checkpoint(tmp_path / "robocasa", robocasa_layout(), "tiny")
    assert "layout" in _fail(["--init", str(ckpt)], demo_home)


def test_paper_profile_needs_weights(demo_home):
    result = runner.invoke(app, ["train", "--profile", "paper"])
    assert result.exit_code != 0 and "model.weights_path" in result.output


def test_refine_without_rollouts(home):
    write_synthetic_episodes(home / "lake", demos=2)
    assert "refinement needs rollouts" in _fail(["--mix", "refine"], home)


def _train_cli(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(Path(sys.executable).with_name("flywheel")), "train", "--profile", "smoke", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_smoke_training_registers_a_candidate_version(demo_home):
    """Ray Train (1 worker) on synthetic demos → MLflow run with params, per-step metrics, datasets, model."""
    out = _train_cli(demo_home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered models:/cosmos-policy/1 with alias candidate" in out.stdout.replace("\n", " ")
    assert "stand-in" in out.stdout  # says what is real
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{demo_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("cosmos-policy", "candidate")
    assert int(version.version) == 1
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.train.lr"] == "0.0005" and run.data.params["flywheel.train.steps"] == "6"
    assert run.data.tags["tokenizer"] == "pixel_shuffle" and run.data.tags["git_commit"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]
    for key in ("action_l1", "value_mae", "future_mse", "lr", "loss_policy"):
        assert client.get_metric_history(run.info.run_id, key), key
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].tags[0].value == "training" or any(
        t.value == "training" for t in inputs[0].tags)
    # Loading what was registered: the checkpoint round-trips and records the config it was trained with.
    from cosmos_policy.checkpoint_io import read_metadata

    meta = read_metadata(demo_home / "checkpoints" / run.data.tags["ray_train_name"])
    assert meta["config"]["train"]["steps"] == 6 and meta["extra"]["mix"] == "base"
    # The same training again is already done: same version, nothing new registered.
    again = _train_cli(demo_home)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert len(client.search_model_versions("name='cosmos-policy'")) == 1
    shutil.rmtree(demo_home / "ray_train", ignore_errors=True)


def test_a_time_budget_sets_the_step_count_and_the_checkpoint_records_it(demo_home):
    """``train.minutes``: the run trains for its budget at the loop's measured rate (``train.steps`` is the cap); the
    step count used is what the checkpoint, the registered model and the run's metrics record."""
    out = _train_cli(demo_home, "--set", "train.minutes=1", "--set", "train.steps=1000000",
                     "--set", "train.report_every=10", "--set", "train.checkpoint_every=1000000")
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    from cosmos_policy.checkpoint_io import read_metadata

    uri = f"sqlite:///{demo_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(client.get_model_version_by_alias("cosmos-policy", "candidate").run_id)
    m = run.data.metrics
    steps = int(m["final_step"])
    assert 20 < steps < 1_000_000 and int(m["final_total_steps"]) == steps
    # the budget counts from the driver starting Ray Train (start-up included); the loop's time is what is left
    assert 0.85 * 60 < m["final_budget_elapsed_s"] < 1.3 * 60 and m["final_train_s"] < m["final_budget_elapsed_s"]
    meta = read_metadata(demo_home / "checkpoints" / run.data.tags["ray_train_name"])
    assert meta["config"]["train"]["steps"] == steps  # recorded truthfully, not the cap
    assert run.data.params["flywheel.train.minutes"] == "1.0"
    shutil.rmtree(demo_home / "ray_train", ignore_errors=True)


def _kill_tree_of_session(home: Path) -> None:
    """SIGKILL leaves Ray's agents of the killed driver orphaned; stop what still runs from this workspace."""
    subprocess.run(["pkill", "-9", "-f", str(home / "ray")], check=False)
    subprocess.run(["pkill", "-9", "-f", "flywheel-ray-"], check=False)


@pytest.mark.slow
def test_sigkill_mid_training_resumes_from_the_last_checkpoint(demo_home):
    """Kill -9 the driver after a checkpoint; the same command resumes: the step count continues in one run."""
    import signal

    args = ["--set", "train.steps=60", "--set", "train.checkpoint_every=10", "--set", "train.report_every=5"]
    env = {**os.environ, "FLYWHEEL_HOME": str(demo_home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(Path(sys.executable).with_name("flywheel")), "train", "--profile", "smoke", *args]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    snapshot_step = 0
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            for snap in (demo_home / "ray_train").glob("*/checkpoint_manager_snapshot.json"):
                try:
                    latest = json.loads(snap.read_text())["latest_checkpoint_result"]
                    snapshot_step = int(latest["metrics"]["step"]) if latest else 0
                except (ValueError, KeyError, TypeError):
                    pass
            if snapshot_step >= 10:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "training finished before it could be killed"
        assert snapshot_step >= 10, "no checkpoint within the deadline"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its children (Ray's head processes)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_tree_of_session(demo_home)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{demo_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    [killed] = client.search_runs([client.get_experiment_by_name("cosmos-policy-flywheel").experiment_id])
    assert killed.info.status == "RUNNING"  # SIGKILL gives no chance to end it
    out = _train_cli(demo_home, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = int(out.stdout.split("resumed from step ")[1].split()[0])
    assert resumed >= 10 and resumed % 10 == 0  # restarted from a checkpoint, not from step 0
    runs = client.search_runs([killed.info.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == killed.info.run_id and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "loss")]
    assert max(steps) == 60 and set(range(resumed + 1, 61)) <= set(steps)
    assert "60 steps" in out.stdout


@pytest.mark.slow
def test_training_workers_on_another_node_get_their_data_through_ray(demo_home):
    """A two-node Ray cluster (``ray.cluster_utils.Cluster``): the training worker must run on the second node
    (custom resource), so its samples, weights and text embeddings come through Ray, and its metrics reach the
    SQLite MLflow store through the tracker actor on the driver's node. Untested here: nodes with separate disks
    (both nodes share this machine's filesystem; Ray Train's checkpoint storage must be shared storage there)."""
    import ray
    from ray.cluster_utils import Cluster

    from flywheel.cli.common import setup
    from tasks.training import train_model

    ray.shutdown()  # a session-wide local instance from an earlier test must not be joined instead
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    other = cluster.add_node(num_cpus=2, resources={"trainer_node": 1})
    try:
        ray.init(address=cluster.address)
        driver_node = ray.get_runtime_context().get_node_id()
        cfg, ws = setup("smoke", None, ["train.resources_per_worker={trainer_node: 1}"], demo_home)
        result = train_model(cfg, ws, "libero_object", progress=False)
        assert result.metrics["node_id"] == other.node_id != driver_node
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{demo_home / 'mlflow' / 'mlflow.db'}"
        history = MlflowClient(uri).get_metric_history(result.run_id, "loss")
        assert [m.step for m in history] == list(range(1, 7))  # logged on the driver's node
        assert result.version == 1
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_refinement_from_a_checkpoint_uses_the_90_10_mix(demo_home, tmp_path):
    """``--init DIR --mix refine`` on demos + successful and failed rollouts: a new version whose run records the
    90/10 fractions, the refine steps and the rollout counts of its input dataset."""
    ckpt = make_tiny_checkpoint(tmp_path / "init")
    out = _train_cli(demo_home, "--init", str(ckpt), "--mix", "refine")
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{demo_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("cosmos-policy", "candidate")
    run = client.get_run(version.run_id)
    assert json.loads(run.data.params["train.mix_fractions"]) == pytest.approx([0.1, 0.45, 0.45])
    assert run.data.params["model.train.steps"] == "4"  # refine.steps of the smoke profile
    assert run.data.tags["init"].startswith("sha-")  # a folder is named by content, not path
    tags = {t.key: t.value for t in run.inputs.dataset_inputs[0].tags}
    assert (tags["rollout_successes"], tags["rollout_failures"], tags["demo_episodes"]) == ("1", "1", "2")


@pytest.mark.slow
def test_training_with_the_wan_clip_encoding(demo_home, tmp_path):
    """``flywheel train`` with a Wan VAE (random weights, the real diffusers class) and the reference's clip slot
    encoding: the clip latents (future frames, blank) go through the cache and Ray Data into Ray Train, and the
    checkpoint records the encoding and acts with it."""
    import numpy as np

    from cosmos_policy.policy import CosmosPolicy
    from sims.types import Observation
    from tests.fixtures.pretrained import save_wan_vae

    save_wan_vae(tmp_path / "vae")
    out = _train_cli(demo_home, "--set", f"model.vae_path={tmp_path / 'vae'}")
    assert out.returncode == 0, out.stderr[-3000:]
    folders = [p.name for p in (demo_home / "cache" / "latents").iterdir()]
    assert len(folders) == 1 and "-clip4-layout" in folders[0], folders
    ckpt = next(p for p in (demo_home / "checkpoints").iterdir() if p.name.startswith("train-"))
    meta = json.loads((ckpt / "cosmos_policy.json").read_text())
    assert meta["config"]["tokenizer"]["kind"] == "wan" and meta["config"]["tokenizer"]["wan_encoding"] == "clip"
    policy = CosmosPolicy.from_checkpoint(ckpt, vae_path=tmp_path / "vae")
    assert policy.tokenizer.contextual
    rng = np.random.default_rng(0)
    obs = Observation(images={c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in ("agentview", "eye_in_hand")},
                      proprio=np.zeros(9, np.float32))
    assert np.isfinite(policy.act([obs], ["put the bowl on the plate"])).all()
