"""``flywheel doctor``: checks the installation for real and says what to fix."""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace

SETUP_HINT = "run `bash scripts/setup.sh` (installs the locked environment and links LIBERO assets)"


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    fix: str = ""


def _imports() -> str:
    from flywheel.compat import ensure_torchvision

    ensure_torchvision()
    versions = []
    for mod in ("torch", "torchvision", "diffusers", "lerobot", "prefect", "ray", "mlflow", "duckdb", "pyarrow",
                "robosuite", "mujoco", "libero.libero", "robocasa", "h5py", "safetensors"):
        m = importlib.import_module(mod)
        versions.append(f"{mod.split('.')[0]} {getattr(m, '__version__', '')}".strip())
    return ", ".join(versions)


_MJCF = """<mujoco><worldbody><light pos="0 0 3"/><geom type="plane" size="1 1 .1" rgba=".2 .6 .2 1"/>
<body pos="0 0 .2"><geom type="box" size=".1 .1 .1" rgba="1 0 0 1"/></body>
<camera name="cam" pos="0 -1 .6" xyaxes="1 0 0 0 .5 .8"/></worldbody></mujoco>"""


def _render() -> str:
    import mujoco
    import numpy as np

    model = mujoco.MjModel.from_xml_string(_MJCF)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, 64, 64) as r:
        r.update_scene(data, camera="cam")
        img = r.render()
    if img.shape != (64, 64, 3) or float(np.std(img)) < 1.0:
        raise RuntimeError(f"rendered image looks empty (shape {img.shape}, std {np.std(img):.2f})")
    import os

    return f"64x64 frame via MUJOCO_GL={os.environ.get('MUJOCO_GL')}"


def _libero_assets() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("libero")
    if spec is None or spec.origin is None:
        raise RuntimeError("LIBERO (rpent-libero) is not installed")
    assets = Path(spec.origin).parent / "libero" / "assets"
    if not (assets / "scenes").is_dir():
        raise RuntimeError(f"{assets} has no scenes/ (asset link missing)")
    return str(assets.resolve())


def _ray(cfg: FlywheelConfig, ws: Workspace) -> str:
    import ray as ray_module

    from tasks.runtime import init_ray

    already = ray_module.is_initialized()  # never shut down a Ray instance the caller owns
    ray = init_ray(cfg, ws, num_cpus=1)
    try:
        ref = ray.remote(lambda: 41 + 1).remote()
        value = ray.get(ref, timeout=120)
        if value != 42:
            raise RuntimeError(f"remote task returned {value}")
        return f"cluster resources {ray.cluster_resources().get('CPU')} CPU"
    finally:
        if not already:
            ray.shutdown()


def _prefect() -> str:
    from prefect import flow

    @flow(name="flywheel-doctor", persist_result=False)
    def ping() -> int:
        return 42

    if ping() != 42:
        raise RuntimeError("flow returned a wrong value")
    import prefect

    return f"flow ran on {'PREFECT_API_URL' if prefect.settings.get_current_settings().api.url else 'ephemeral API'}"


def _mlflow(cfg: FlywheelConfig, ws: Workspace) -> str:
    from tasks.runtime import init_mlflow, mlflow_uri

    exp = init_mlflow(cfg, ws)
    return f"{mlflow_uri(cfg, ws)} experiment {cfg.mlflow.experiment!r} (id {exp})"


def _lake(ws: Workspace) -> str:
    from storage_schemas import LakeWriter

    writer = LakeWriter(ws.lake)
    with tempfile.NamedTemporaryFile(dir=writer.layout.meta_dir, suffix=".tmp"):
        pass
    return f"{ws.lake.root} (schema v{writer.info()['schema_version']})"


def run_checks(cfg: FlywheelConfig, ws: Workspace, skip: set[str], on_result: Callable[[CheckResult], None]) -> list[CheckResult]:
    checks: list[tuple[str, Callable[[], str], str]] = [
        ("imports", _imports, SETUP_HINT),
        ("mujoco-egl", _render, "install Debian libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 and set MUJOCO_GL=egl"),
        ("libero-assets", _libero_assets, SETUP_HINT),
        ("lake", lambda: _lake(ws), f"make {ws.home} writable or set FLYWHEEL_HOME"),
        ("mlflow", lambda: _mlflow(cfg, ws), "check mlflow.tracking_uri / MLFLOW_TRACKING_URI"),
        ("ray", lambda: _ray(cfg, ws), "unset a stale RAY_ADDRESS or stop leftover Ray processes (`ray stop`)"),
        ("prefect", _prefect, "unset a stale PREFECT_API_URL, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"),
    ]
    results = []
    for name, fn, fix in checks:
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            res = CheckResult(name, True, fn(), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a doctor reports every failure
            res = CheckResult(name, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300], time.perf_counter() - t0, fix)
        results.append(res)
        on_result(res)
    return results
