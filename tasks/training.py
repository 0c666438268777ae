"""Fine-tuning and refinement of Cosmos Policy on Ray Train, every run versioned in MLflow.

:func:`train_model` is the plain function the CLI and the flows call (``train_task`` wraps it for Prefect):

1. checks everything that can be checked before work starts (config, tracking server, lake selection, the
   starting checkpoint and its layout) and fails with one clear message otherwise;
2. fills the latent cache for the selected episodes (encoding only what is missing);
3. trains with ``TorchTrainer`` (:mod:`tasks.train_loop`), samples streamed from Ray Data readers pinned to the
   driver's node (:mod:`tasks.train_data`), one MLflow run per training with per-step metrics;
4. logs the final checkpoint as an MLflow pyfunc model, registers a new version and points ``candidate`` at it.

The same training started again (same suite, mix, starting model, episodes and resolved config) has the same key:
a finished one is returned as is, a crashed one resumes from its latest Ray Train checkpoint in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import task

from cosmos_policy.configuration_cosmos_policy import MixName
from flywheel.config import FlywheelConfig
from flywheel.model_setup import ModelSetupError, layout_for_suite
from flywheel.workspace import Workspace
from tasks.train_data import TrainingSelection, build_datasets, select_training_episodes

ProgressFn = Callable[[dict[str, Any]], None]


class TrainingError(RuntimeError):
    """Training itself failed (a worker raised); the MLflow run is marked FAILED."""


@dataclass
class TrainResult:
    """What a training produced (a registered model version with alias ``candidate``)."""

    run_id: str
    run_name: str
    model_name: str
    version: int
    model_uri: str
    checkpoint: Path
    steps: int
    resumed_from_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    already_done: bool = False
    stand_ins: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    """Everything checked before any work: model, config, selection, identity."""

    model: Any
    stats: Any
    init_label: str
    selection: TrainingSelection
    key: str
    name: str
    stand_ins: list[str]
    minutes: float | None = None  # the loop's time budget (train.minutes / refine.minutes)


def check_pretrained_config(cfg: FlywheelConfig) -> None:
    """Refuse configs that would silently train something else than asked (issue: say what is real)."""
    m = cfg.model
    if m.preset == "2b" and m.weights_path is None:
        raise ModelSetupError("the 2b preset (profile paper) fine-tunes pretrained Cosmos-Predict2 weights: pass "
                              "--set model.weights_path=/path/to/Cosmos-Predict2-2B-Video2World (a local diffusers "
                              "folder), or --init a checkpoint")
    if m.weights_path is not None:
        root = Path(m.weights_path)
        if not root.exists():
            raise ModelSetupError(f"model.weights_path {root} does not exist")
        lacking = [f"{sub}/" for sub, given in (("vae", m.vae_path), ("text_encoder", m.t5_path))
                   if given is None and not (root / sub / "config.json").exists()]
        if lacking and not m.allow_stand_ins:
            raise ModelSetupError(f"model.weights_path {root} lacks {' and '.join(lacking)}: pass model.vae_path / "
                                  f"model.t5_path, or --set model.allow_stand_ins=true to train with the stand-in "
                                  f"tokenizer / text embedder")


def stand_ins_of(model_config: Any) -> list[str]:
    """Which stand-ins a model uses (recorded as tags and printed)."""
    out = []
    if model_config.tokenizer.kind != "wan":
        out.append("tokenizer=pixel_shuffle stand-in (not the Wan 2.1 VAE)")
    if not model_config.text.t5_path:
        out.append("text embedder=hash stand-in (not T5)")
    return out


def _load_init(cfg: FlywheelConfig, ws: Workspace, suite: str, init: str | None) -> tuple[Any, Any, str]:
    """(model, stats, label) of the starting point: a checkpoint / model URI, or the config's pretrained/random."""
    from cosmos_policy.checkpoint_io import load_checkpoint
    from flywheel.model_setup import build_model, component_paths, suite_stats
    from tasks.registry import check_layout, resolve_model
    from tasks.runtime import mlflow_uri

    if init is None:
        stats = suite_stats(ws.lake, suite)
        model = build_model(cfg, suite, cfg.train.seed)
        return model, stats, str(cfg.model.weights_path or f"random:{cfg.model.preset}:{cfg.train.seed}")
    resolved = resolve_model(init, ws.home / "cache" / "models", mlflow_uri(cfg, ws))
    check_layout(resolved.path, suite, chunk_size=cfg.model.chunk_size)
    try:
        model, stats = load_checkpoint(resolved.path, **component_paths(cfg))
    except Exception as exc:  # noqa: BLE001 - truncated weights, inconsistent metadata: one clear message
        raise ModelSetupError(f"--init {init}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from None
    return model, stats, resolved.version_label


def prepare(cfg: FlywheelConfig, ws: Workspace, suite: str, init: str | None, mix: MixName, where: str | None,
            rollout_iterations: tuple[int, int] | None) -> _Prepared:
    """All checks and the run's identity, before any training work (nothing is written)."""
    from flywheel.model_setup import training_config

    check_pretrained_config(cfg)
    layout_for_suite(suite, cfg.model.preset, cfg.model.chunk_size, cfg.model.object_state)
    selection = select_training_episodes(ws.lake, suite, mix, where, rollout_iterations)
    model, stats, label = _load_init(cfg, ws, suite, init)
    train_cfg = training_config(cfg, model.config.train, mix)
    value_inputs = ((cfg.refine.value_inputs if mix == "refine" else None) or cfg.train.value_inputs
                    or model.config.value_inputs)
    model.config = replace(model.config, train=train_cfg, value_inputs=value_inputs)
    minutes = (cfg.refine.minutes or cfg.train.minutes) if mix == "refine" else cfg.train.minutes
    identity = {"suite": suite, "mix": mix, "init": label, "episodes": selection.digest,
                "model": model.config.to_dict(), "num_workers": cfg.train.num_workers, "seed": cfg.train.seed}
    if minutes is not None:  # (keys of runs without a time budget are unchanged)
        identity["minutes"] = minutes
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return _Prepared(model, stats, label, selection, key, f"train-{suite}-{mix}-{key[:10]}",
                     stand_ins_of(model.config), minutes)


def _text_table(model: Any, instructions: list[str]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        return {s: model.encode_text([s])[0].detach().float().cpu() for s in instructions}


def fill_cache(ws: Workspace, prep: _Prepared, progress: bool) -> Path:
    from cosmos_policy.tokenizer import build_tokenizer
    from flywheel.episodes import cache_latents

    ids = ", ".join("'" + i.replace("'", "''") + "'" for i in prep.selection.episode_ids)
    result = cache_latents(ws.lake, build_tokenizer(prep.model.config.tokenizer), ws.latent_cache,
                           prep.model.layout.camera_names, where=f"episode_id IN ({ids})", progress=progress,
                           keep=False, latent_layout=prep.model.layout)
    print(f"latents: {result.misses} episodes encoded, {result.hits} cached ({result.fingerprint})")
    return ws.latent_cache / result.fingerprint


def _run_trainer(cfg: FlywheelConfig, ws: Workspace, prep: _Prepared, cache_folder: Path, run_id: str,
                 on_progress: ProgressFn | None) -> Any:
    """``TorchTrainer.fit`` with a progress poller; returns Ray Train's Result."""
    started_at = time.time()  # a time budget (train.minutes) counts from here: Ray and its datasets included
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tasks.runtime import WORKER_ENV, init_ray, mlflow_uri
    from tasks.train_loop import ProgressTracker, WorkerConfig, train_loop_per_worker

    throttle = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": WORKER_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]}
    for key, value in throttle.items():  # read by the controller the driver starts (and by its workers)
        os.environ.setdefault(key, value)
    t = cfg.train
    need = t.num_workers * t.cpus_per_worker
    ray = init_ray(cfg, ws, num_cpus=max(os.cpu_count() or 1, int(need) + 1))  # leave a CPU for the data readers
    model, train_cfg = prep.model, prep.model.config.train
    streams = prep.selection.stream_names(train_cfg.balance_outcomes)
    datasets = build_datasets(ray, prep.selection, ws.lake, cache_folder, model.layout, cfg.model.gamma,
                              train_cfg.balance_outcomes)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    tracker = ray.remote(num_cpus=0)(ProgressTracker).options(scheduling_strategy=here).remote(
        mlflow_uri(cfg, ws), run_id)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in model.transformer.state_dict().items()}
    instructions = sorted(set(prep.selection.episodes.column("instruction").to_pylist()))
    wc = WorkerConfig(
        model_config=model.config.to_dict(), stats=prep.stats.to_dict(), init_weights=ray.put(weights),
        text_table=ray.put(_text_table(model, instructions)), steps=train_cfg.steps, batch_size=train_cfg.batch_size,
        fractions=train_cfg.mix_fractions(prep.selection.mix), stream_names=streams, report_every=t.report_every,
        checkpoint_every=t.checkpoint_every, seed=t.seed, threads=max(1, int(t.cpus_per_worker)),
        progress=tracker, minutes=prep.minutes, started_at=started_at,
        extra={"suite": prep.selection.suite, "mix": prep.selection.mix, "init": prep.init_label,
               "episodes_digest": prep.selection.digest, "training_key": prep.key})
    storage = t.storage_path or str(ws.home / "ray_train")
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"worker": wc},
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker, **t.resources_per_worker}),
        run_config=RunConfig(name=prep.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                             worker_runtime_env={"env_vars": throttle}),
        datasets=datasets)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                state = ray.get(tracker.get.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - progress is best effort
                continue
            if state and on_progress:
                on_progress(state)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors; keep the cause readable
        raise TrainingError(f"training {prep.name} failed: {exc}") from exc
    finally:
        stop.set()
        poller.join(timeout=2)
        try:
            log_s = ray.get(tracker.flush.remote(), timeout=120)  # every metric sent is in MLflow
        except Exception:  # noqa: BLE001 - the training's own error matters more
            log_s = float("nan")
        ray.kill(tracker)
    if result.error is not None:
        raise TrainingError(f"training {prep.name} failed: {result.error}")
    if result.metrics is not None:
        result.metrics["mlflow_log_s"] = log_s  # driver-side time writing the metrics
    if on_progress:
        on_progress({**(result.metrics or {}), "total": (result.metrics or {}).get("total_steps", train_cfg.steps)})
    return result


def _export_checkpoint(result: Any, out: Path) -> Path:
    """Copy the model files (no optimiser state) of the final Ray Train checkpoint to ``out``."""
    from cosmos_policy.checkpoint_io import META_NAME, WEIGHTS_NAME

    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as d:
        for name in (WEIGHTS_NAME, META_NAME):
            shutil.copyfile(Path(d) / name, out / f".{name}.tmp")
            os.replace(out / f".{name}.tmp", out / name)
    return out


def _lake_snapshot(ws: Workspace) -> str:
    from storage_schemas.views import connect

    con = connect(ws.lake)
    try:
        n, last = con.sql("SELECT count(*), max(created_at) FROM episodes").fetchall()[0]
    finally:
        con.close()
    return f"{n} episodes, last {last}"


def _existing_result(prep: _Prepared, run: Any, model_name: str) -> TrainResult | None:
    tags = run.data.tags
    if run.info.status != "FINISHED" or "flywheel.model_version" not in tags:
        return None
    version = int(tags["flywheel.model_version"])
    return TrainResult(run.info.run_id, run.info.run_name, model_name, version, f"models:/{model_name}/{version}",
                       Path(tags.get("flywheel.checkpoint", "")), int(run.data.metrics.get("final_step", 0)), 0,
                       dict(run.data.metrics), already_done=True, stand_ins=prep.stand_ins)


def train_model(cfg: FlywheelConfig, ws: Workspace, suite: str, init: str | None = None, mix: MixName = "base",
                where: str | None = None, rollout_iterations: tuple[int, int] | None = None,
                parent_run_id: str | None = None, on_progress: ProgressFn | None = None,
                progress: bool = True) -> TrainResult:
    """Train (or refine) on Ray Train and register the result in MLflow with alias ``candidate``.

    Args:
        cfg: resolved flywheel config (``train.*``, ``refine.*``, ``model.*``, ``mlflow.*``).
        ws: workspace (lake, latent cache, checkpoints, Ray Train storage).
        suite: suite whose episodes train the model.
        init: starting checkpoint folder or ``models:/`` URI; None = ``model.weights_path`` or the random preset.
        mix: ``base`` (50/25/25 from demos) or ``refine`` (90% rollouts as world-model/value, 10% demo policy).
        where: extra SQL predicate over the ``episodes`` view.
        rollout_iterations: inclusive iteration window of rollouts used by refinement.
        parent_run_id: MLflow parent (a cycle's iteration run).
        on_progress: called with rank 0's latest report (``step``, ``loss``, ``samples_per_s``, ``total``).
        progress: show the latent-cache progress bar.
    """
    import mlflow

    from tasks.registry import check_tracking, flatten_params, log_and_register_model
    from tasks.runtime import init_mlflow, mlflow_uri
    from tasks.tracking import find_run, git_commit, log_episode_dataset, log_params_once, stage_run

    check_tracking(mlflow_uri(cfg, ws))
    prep = prepare(cfg, ws, suite, init, mix, where, rollout_iterations)
    for line in prep.stand_ins:
        print(f"warning: training with the {line}; see model.vae_path / model.t5_path")
    experiment_id = init_mlflow(cfg, ws)
    previous = find_run(experiment_id, prep.key)
    if previous is not None and (done := _existing_result(prep, previous, cfg.mlflow.model_name)) is not None:
        print(f"training {prep.name} already finished in MLflow run {done.run_id} (version {done.version})")
        return done
    sel = prep.selection
    tags = {"flywheel.stage": "train", "flywheel.mix": mix, "flywheel.suite": suite, "git_commit": git_commit(),
            "lake_snapshot": _lake_snapshot(ws), "tokenizer": prep.model.config.tokenizer.kind,
            "text_embedder": "t5" if prep.model.config.text.t5_path else "hash",
            "stand_ins": "; ".join(prep.stand_ins) or "none", "init": prep.init_label,
            "ray_train_name": prep.name}
    with stage_run(experiment_id, prep.key, prep.name, tags, parent_run_id) as (run, reopened):
        run_id = run.info.run_id
        if reopened:
            print(f"resuming training {prep.name} (MLflow run {run_id})")
        log_params_once(run, {**flatten_params({"flywheel": json.loads(cfg.to_json())}),
                              **flatten_params({"model": prep.model.config.to_dict()}),
                              "train.mix_fractions": json.dumps(list(prep.model.config.train.mix_fractions(mix))),
                              "train.init": prep.init_label})
        if not reopened:
            log_episode_dataset(sel.episodes, source=str(ws.lake.root / "episodes"),
                                name=f"{suite}-{mix}-episodes", digest=sel.digest,
                                tags={"demo_episodes": sel.counts["demo"], "rollout_episodes": sel.counts["rollout"],
                                      "rollout_successes": sel.counts["rollout_success"],
                                      "rollout_failures": sel.counts["rollout_failure"]})
        cache_folder = fill_cache(ws, prep, progress)
        result = _run_trainer(cfg, ws, prep, cache_folder, run_id, on_progress)
        metrics = dict(result.metrics or {})
        checkpoint = _export_checkpoint(result, ws.checkpoints / prep.name)
        mlflow.log_metrics({"final_" + k.replace("/", "_"): float(v) for k, v in metrics.items()
                            if isinstance(v, int | float)})
        registered = log_and_register_model(run_id, checkpoint, cfg.mlflow.model_name, alias="candidate",
                                            tracking_uri=mlflow_uri(cfg, ws))
        mlflow.set_tags({"flywheel.model_version": str(registered.version), "flywheel.checkpoint": str(checkpoint)})
    steps = int(metrics.get("step", prep.model.config.train.steps))
    resumed = steps - int(metrics.get("steps_this_run", steps))
    return TrainResult(run_id, prep.name, cfg.mlflow.model_name, registered.version,
                       f"models:/{cfg.mlflow.model_name}/{registered.version}", checkpoint, steps, resumed, metrics,
                       stand_ins=prep.stand_ins)


# Prefect task: the training is idempotent by its key (a finished one is returned from MLflow), so no cache policy
# is needed to skip it; no retries (a failed training resumes from its checkpoint when started again).
train_task = task(train_model, name="train", persist_result=False)
