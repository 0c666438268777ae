"""MLflow model versioning (tasks.registry) on a SQLite tracking store in tmp: no Ray, no simulator."""

from __future__ import annotations

import os
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest

from cosmos_policy.checkpoint_io import save_untrained_checkpoint
from cosmos_policy.latent_layout import libero_layout, robocasa_layout
from tasks.registry import (
    RegistryError,
    check_layout,
    check_tracking,
    checkpoint_digest,
    flatten_params,
    log_and_register_model,
    resolve_model,
)

MODEL = "cosmos-test"


def _ckpt(path, seed=0, layout=None):
    """Tiny checkpoint: 4x4 latents → 32x32 images, K=16."""
    return save_untrained_checkpoint(path, layout or libero_layout(latent_hw=4), "tiny", seed)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One SQLite store with MODEL versions 1 (seed 0) and 2 (seed 1); alias ``candidate`` → 2 (one DB creation)."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        check_tracking(uri)
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        exp = client.create_experiment("registry-test", artifact_location=(root / "artifacts").as_uri())
        run_id = client.create_run(exp).info.run_id
        ck1, ck2 = _ckpt(root / "ckpt-a", 0), _ckpt(root / "ckpt-b", 1)
        t0 = time.perf_counter()
        mlflow.set_tracking_uri(uri)  # earlier tests in this process may have pointed MLflow elsewhere
        mlflow.set_registry_uri(uri)
        v1 = log_and_register_model(run_id, ck1, MODEL, tracking_uri=uri)  # the run is not active here
        status_after_v1 = client.get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id):  # the training path: the run is the active one
            v2 = log_and_register_model(run_id, ck2, MODEL, tracking_uri=uri)
            still_active = mlflow.active_run().info.run_id == run_id
        yield SimpleNamespace(root=root, uri=uri, client=client, run_id=run_id, ck1=ck1, ck2=ck2, v1=v1, v2=v2,
                              log_s=time.perf_counter() - t0, cache=root / "cache", status_after_v1=status_after_v1,
                              still_active=still_active)


def test_unreachable_server_fails_fast():
    import mlflow  # noqa: F401 - the import (seconds) is not part of the check

    t0 = time.perf_counter()
    with pytest.raises(RegistryError, match=r"http://127.0.0.1:9 is unreachable: \[Errno 111\] Connection refused; start it or unset MLFLOW_TRACKING_URI"):
        check_tracking("http://127.0.0.1:9")
    assert time.perf_counter() - t0 < 5
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ or os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] != "0"


def test_sqlite_folder_must_be_writable(tmp_path):
    check_tracking(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert (tmp_path / "new").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="cannot be created"):
        check_tracking(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlflow.db'}")


def test_flatten_params():
    flat = flatten_params({"train": {"lr": 1e-4, "betas": [0.9, 0.99], "sched": {"kind": "cosine"}}, "seed": 3,
                           "empty": {}, "long": "x" * 7000, "none": None})
    assert flat == {"train.lr": "0.0001", "train.betas": "[0.9, 0.99]", "train.sched.kind": "cosine", "seed": "3",
                    "empty": "{}", "long": "x" * 6000, "none": "None"}
    assert flatten_params({"a": 1}, prefix="cfg") == {"cfg.a": "1"}


def test_checkpoint_digest_follows_content_not_path(tmp_path):
    a = _ckpt(tmp_path / "a", 0)
    b = shutil.copytree(a, tmp_path / "elsewhere" / "b")
    d = checkpoint_digest(a)
    assert len(d) == 16 and checkpoint_digest(b) == d
    _ckpt(a, 1)  # a new model written over the old folder
    assert checkpoint_digest(a) != d
    with pytest.raises(RegistryError, match="not a cosmos_policy checkpoint"):
        checkpoint_digest(tmp_path)


def test_two_registrations_make_two_versions(registry):
    r = registry
    assert (r.v1.version, r.v2.version) == (1, 2)
    assert r.v2.uri == f"models:/{MODEL}/2" and r.v1.model_id != r.v2.model_id
    assert str(r.client.get_model_version_by_alias(MODEL, "candidate").version) == "2"
    mv = r.client.get_model_version(MODEL, "1")
    assert mv.tags["checkpoint_digest"] == checkpoint_digest(r.ck1) == r.v1.digest
    assert r.v1.digest != r.v2.digest
    assert r.status_after_v1 == "RUNNING" and r.still_active  # logging into the run left its state alone
    print(f"two log_and_register_model calls: {r.log_s:.1f}s")


def test_resolve_alias_version_and_local_folder(registry, monkeypatch):
    r = registry
    cand = resolve_model(f"models:/{MODEL}@candidate", r.cache, r.uri)
    assert cand.registered and cand.version_label == f"{MODEL}/v2"
    assert cand.path.is_relative_to(r.cache / MODEL / "2") and checkpoint_digest(cand.path) == r.v2.digest
    one = resolve_model(f"models:/{MODEL}/1", r.cache, r.uri)
    assert one.version_label == f"{MODEL}/v1" and checkpoint_digest(one.path) == r.v1.digest
    import tasks.registry as registry_mod

    monkeypatch.setattr(registry_mod, "_download", lambda *a: pytest.fail("cached version downloaded again"))
    assert resolve_model(f"models:/{MODEL}/2", r.cache, r.uri).path == cand.path
    local = resolve_model(str(r.ck1), r.cache)
    assert not local.registered and local.version_label == f"sha-{r.v1.digest}" and local.path == r.ck1.resolve()


def test_resolve_errors_name_what_exists(registry, tmp_path):
    r = registry
    with pytest.raises(RegistryError, match=r"unknown alias 'champion'.*@candidate -> v2.*versions: 1, 2"):
        resolve_model(f"models:/{MODEL}@champion", r.cache, r.uri)
    with pytest.raises(RegistryError, match=r"unknown version 7.*versions: 1, 2"):
        resolve_model(f"models:/{MODEL}/7", r.cache, r.uri)
    with pytest.raises(RegistryError, match=rf"no registered model 'nope'; registered models: {MODEL}"):
        resolve_model("models:/nope@candidate", r.cache, r.uri)
    with pytest.raises(RegistryError, match="not a cosmos_policy checkpoint"):
        resolve_model(str(tmp_path), r.cache)
    with pytest.raises(RegistryError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), r.cache)
    with pytest.raises(RegistryError, match="runs:/ URIs are not supported"):
        resolve_model("runs:/abc/model", r.cache, r.uri)
    with pytest.raises(RegistryError, match="nothing is registered yet"):
        resolve_model(f"models:/{MODEL}/1", r.cache, f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")


def test_pyfunc_load_and_predict(registry):
    import mlflow

    from cosmos_policy.checkpoint_io import read_metadata
    from tasks.pyfunc_spec import pyfunc_input_example

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@candidate")
    df = pyfunc_input_example(read_metadata(registry.ck2))
    batch = df.loc[[0, 0]].reset_index(drop=True)
    batch.loc[1, "instruction"] = "put the bowl in the basket"
    batch.at[1, "proprio"] = [0.1] * 9
    out = model.predict(batch)
    actions = np.asarray(out["actions"].tolist())
    assert actions.shape == (2, 16, 7) and np.isfinite(actions).all()


def test_check_layout_refuses_a_robocasa_checkpoint_on_libero(tmp_path):
    robo = _ckpt(tmp_path / "robo", layout=robocasa_layout(latent_hw=4))
    with pytest.raises(RegistryError, match=r"3 cameras.*suite 'libero_object' needs 'libero' \(2 cameras"):
        check_layout(robo, "libero_object")
    assert check_layout(robo, "robocasa_fixture").name == "robocasa"
    lib = _ckpt(tmp_path / "lib")
    assert check_layout(lib, "libero_object", chunk_size=16).camera_names == ("eye_in_hand", "agentview")
    with pytest.raises(RegistryError, match="chunk_size: expected 8, found 16"):
        check_layout(lib, "libero_object", chunk_size=8)
    with pytest.raises(RegistryError, match="latent_height: expected 8, found 4"):
        check_layout(lib, "libero_object", preset="tiny")


def test_rollout_cli_resolves_a_models_uri_and_records_its_version(registry, home, monkeypatch):
    """``flywheel rollout --policy models:/NAME@ALIAS`` up to the batched loop (Ray and the simulator faked)."""
    from typer.testing import CliRunner

    from flywheel.cli.app import app
    from sims.types import TaskSpec
    from tasks.rollout_engine import RolloutStats

    seen = {}

    class FakeEngine:
        ray = None

        def task_specs(self, ids):
            return [TaskSpec("libero_object", 0, "pick", 10, 50)]

        def shutdown(self):
            pass

    class FakeHandle:
        def __init__(self, ray, factory, placement):
            seen["checkpoint"] = factory.args[0]

        def close(self):
            pass

    def fake_run(engine, handle, reqs, writer, dataset_id, gamma, on_episode, execute_actions=None):
        seen["reqs"], seen["execute_actions"] = reqs, execute_actions
        stats = RolloutStats(total=len(reqs))
        for r in reqs:
            stats.add(r, False, 10, None)
        return stats

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    monkeypatch.setattr("tasks.rollouts._engine", lambda *a, **k: FakeEngine())
    monkeypatch.setattr("tasks.batched_rollouts.PolicyHandle", FakeHandle)
    monkeypatch.setattr("tasks.batched_rollouts.run_batched", fake_run)
    res = CliRunner().invoke(app, ["rollout", "--policy", f"models:/{MODEL}@candidate", "--suite", "libero_object",
                                   "--tasks", "0", "--episodes", "2", "--profile", "smoke",
                                   "--set", "model.execute_actions=4"])
    assert res.exit_code == 0, res.output
    assert seen["execute_actions"] == 4  # the config reaches the batched rollouts
    assert f"Rollouts of {MODEL}/v2".replace(" ", "") in "".join(res.output.split())  # (the fake wrote no rows)
    assert {r.policy_version for r in seen["reqs"]} == {f"{MODEL}/v2"} and len(seen["reqs"]) == 2
    assert seen["checkpoint"].startswith(str(home / "cache" / "models" / MODEL / "2"))
    res = CliRunner().invoke(app, ["rollout", "--policy", f"models:/{MODEL}@champion", "--profile", "smoke"])
    assert res.exit_code == 2 and "unknown alias 'champion'" in res.output and "@candidate -> v2" in res.output


def test_pyfunc_of_an_object_state_checkpoint(tmp_path):
    """A layout with the privileged object-state frame: the signature and input example carry ``object_state``,
    and predict feeds it to the policy (missing column or wrong length: one clear error)."""
    from cosmos_policy.checkpoint_io import read_metadata
    from tasks.pyfunc_model import CosmosPolicyPyfunc
    from tasks.pyfunc_spec import pyfunc_input_example, pyfunc_signature

    ck = _ckpt(tmp_path / "obj", layout=libero_layout(latent_hw=4, object_state_dim=20))
    meta = read_metadata(ck)
    assert "object_state" in pyfunc_signature(meta).inputs.input_names()
    df = pyfunc_input_example(meta)
    assert len(df.loc[0, "object_state"]) == 20
    wrapper = CosmosPolicyPyfunc()
    wrapper.load_context(SimpleNamespace(artifacts={"checkpoint": str(ck)}))
    batch = df.loc[[0, 0]].reset_index(drop=True)
    batch.at[1, "object_state"] = [0.5] * 20
    out = np.asarray(wrapper.predict(None, batch)["actions"].tolist())
    assert out.shape == (2, 16, 7) and np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"lacks columns \['object_state'\]"):
        wrapper.predict(None, df.drop(columns=["object_state"]))
    bad = df.copy()
    bad.at[0, "object_state"] = [0.0] * 3
    with pytest.raises(ValueError, match="object_state has 3 values, the checkpoint expects 20"):
        wrapper.predict(None, bad)
    plain = read_metadata(_ckpt(tmp_path / "plain"))
    assert "object_state" not in pyfunc_signature(plain).inputs.input_names()
