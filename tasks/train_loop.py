"""The Ray Train worker loop: one Cosmos Policy fine-tuning (or refinement) run, resumable after a crash.

Every worker builds the model from weights shipped through Ray's object store, reads its shard of the sample
streams (:mod:`tasks.train_data`), trains with DDP (gloo on CPU, nccl on GPU) and, every ``report_every`` steps,
reports metrics; every ``checkpoint_every`` steps rank 0 also writes a resumable checkpoint in the project's own
format (``model.safetensors`` + ``cosmos_policy.json``, plus ``optimizer.pt`` loaded with ``weights_only=True`` and
``trainer_state.json``). A run started again under the same name resumes from the latest checkpoint: the step count
continues, optimiser and lr-schedule state are restored, the streams continue where they were, and the noise of
step ``s`` is seeded by (seed, rank, s), so the resumed steps draw what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "trainer_state.json"


@dataclass
class WorkerConfig:
    """Everything a training worker needs; weights and text embeddings travel as object refs. It holds no path: a
    worker on any node needs neither the lake, nor the latent cache, nor the MLflow store."""

    model_config: dict[str, Any]
    stats: dict[str, Any]
    init_weights: Any  # ObjectRef to a state dict (CPU tensors)
    text_table: Any  # ObjectRef to {instruction: (L, D) tensor}
    steps: int
    batch_size: int  # global; each of the world_size workers takes batch_size / world_size
    fractions: tuple[float, float, float]
    stream_names: list[str]
    report_every: int
    checkpoint_every: int
    seed: int = 0
    threads: int = 1
    progress: Any = None  # ProgressTracker actor handle (progress bar, MLflow metrics)
    minutes: float | None = None  # time budget of the training: ``steps`` becomes the cap (see StepBudget)
    started_at: float | None = None  # time.time() when the driver started the run (the budget counts from it)
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the checkpoint (suite, mix, data digest)


class ProgressTracker:
    """An actor on the driver's node that rank 0 sends progress and per-step metrics to.

    The driver polls :meth:`get` for its progress bar; :meth:`log` writes metrics to MLflow from the driver's node
    (which sees the default SQLite store), so training workers on other nodes need no path and no MLflow access.
    Calls run in order: the driver's :meth:`flush` returns once everything sent before it is logged.
    """

    def __init__(self, mlflow_uri: str | None = None, run_id: str | None = None) -> None:
        self.state: dict[str, Any] = {}
        self.client = None
        self.run_id = run_id
        self.log_seconds = 0.0
        if mlflow_uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(mlflow_uri)

    def update(self, state: dict[str, Any]) -> None:
        self.state = state

    def log(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        if self.client is None or not steps:
            return
        from mlflow.entities import Metric

        t0 = time.perf_counter()
        now = int(time.time() * 1000)
        batch = [Metric(k.replace("/", "_"), float(v), now, s) for s, m in steps for k, v in m.items()]
        for i in range(0, len(batch), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000], synchronous=True)
        self.log_seconds += time.perf_counter() - t0

    def get(self) -> dict[str, Any]:
        return self.state

    def flush(self) -> float:
        """Seconds spent writing metrics to MLflow so far."""
        return self.log_seconds


class StepBudget:
    """The run's step count, which is also the lr schedule's horizon.

    Without a time budget it is ``cap`` (``train.steps``). With one, the run fills ``minutes`` counted from
    :meth:`start` (the driver starting the Ray Train run, so start-up counts): at each report the count is re-projected from the rate measured since the first report
    (the first steps are slower), ``step + rate × time left``, capped at ``cap``, until a tenth of the budget has
    passed; it is then fixed. Moving the horizon that early shifts the cosine schedule by at most a few per cent
    of the lr. A resumed run keeps the count its checkpoint recorded.
    """

    FIX_AFTER = 0.1  # share of the budget after which the count no longer moves

    def __init__(self, cap: int, minutes: float | None, total: int | None = None) -> None:
        self.cap = cap
        self.budget_s = None if minutes is None else minutes * 60.0
        self.total = cap if total is None else min(int(total), cap)
        self.fixed = self.budget_s is None or total is not None
        self._start: float | None = None
        self._anchor: tuple[int, float] | None = None

    def start(self, now: float) -> None:
        self._start = now

    def observe(self, step: int, now: float) -> int:
        """Update the count at a report after ``step`` steps (time ``now``); returns it."""
        if self.fixed or self._start is None:
            return self.total
        if self._anchor is None:
            self._anchor = (step, now)
            return self.total
        s0, t0 = self._anchor
        if step > s0 and now > t0:
            rate = (step - s0) / (now - t0)
            left = self.budget_s - (now - self._start)
            self.total = max(step + 1, min(self.cap, step + int(rate * max(left, 0.0))))
        if now - self._start >= self.FIX_AFTER * self.budget_s:
            self.fixed = True
        return self.total

    def elapsed(self, now: float) -> float:
        """Seconds since :meth:`start` (0 before it)."""
        return 0.0 if self._start is None else now - self._start

    def adopt(self, total: int, fixed: bool) -> None:
        """Take another rank's count (DDP: every worker must run the same number of steps)."""
        self.total, self.fixed = min(total, self.cap), fixed


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the σ/noise draw of ``step`` on ``rank`` (so a resumed step repeats the uninterrupted draw)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def save_train_checkpoint(folder: Path, model: Any, stats: Any, optimizer: torch.optim.Optimizer,
                          scheduler: Any, step: int, positions: dict[str, dict[str, int]], extra: dict,
                          total_steps: int | None = None) -> Path:
    """A resumable checkpoint: a loadable model checkpoint plus optimiser, schedule and data positions."""
    from cosmos_policy.checkpoint_io import save_checkpoint

    save_checkpoint(folder, model, stats, extra={**extra, "step": step})
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_NAME)
    state = {"step": step, "scheduler": scheduler.state_dict(), "positions": positions,
             "total_steps": step if total_steps is None else total_steps}
    (folder / STATE_NAME).write_text(json.dumps(state, indent=2))
    return folder


def load_train_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model weights, optimiser state, trainer state) of a resumable checkpoint; nothing is unpickled."""
    from safetensors.torch import load_file

    from cosmos_policy.checkpoint_io import WEIGHTS_NAME

    weights = load_file(str(folder / WEIGHTS_NAME))
    optim = torch.load(folder / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
    return weights, optim, json.loads((folder / STATE_NAME).read_text())


class _MetricLog:
    """Per-step metrics of rank 0: averaged for each report and sent, every step's values, to the tracker."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.send_seconds = 0.0

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self.pending.append((step, metrics))

    def flush(self) -> dict[str, float]:
        """Mean of the pending steps' metrics; their per-step values go to MLflow through the tracker."""
        sums: dict[str, list[float]] = defaultdict(list)
        for _, m in self.pending:
            for k, v in m.items():
                sums[k].append(v)
        if self.tracker is not None and self.pending:
            t0 = time.perf_counter()
            self.tracker.log.remote(self.pending)
            self.send_seconds += time.perf_counter() - t0
        self.pending = []
        return {k: sum(v) / len(v) for k, v in sums.items()}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config={"worker": WorkerConfig})``)."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.normalization import NormalizationStats
    from cosmos_policy.samples import batch_from_rows
    from cosmos_policy.text_conditioning import PrecomputedTextEmbedder
    from cosmos_policy.train_step import TrainingLoss, lr_factor, make_optimizer, train_step
    from tasks.train_data import BatchMixer, SampleStream, StreamPosition

    wc: WorkerConfig = loop_config["worker"]
    torch.set_num_threads(max(1, wc.threads))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    config = CosmosPolicyConfig.from_dict(wc.model_config)
    stats = NormalizationStats.from_dict(wc.stats)
    text_table = ray.get(wc.text_table)
    model = CosmosPolicyModel(config, device="meta", text_embedder=PrecomputedTextEmbedder(text_table))

    step, positions, optim_state, sched_state, state = 0, {}, None, None, {}
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            weights, optim_state, state = load_train_state(Path(d))
        step, positions, sched_state = int(state["step"]), state["positions"], state["scheduler"]
    else:
        weights = ray.get(wc.init_weights)
    model.transformer.load_state_dict(weights, strict=True, assign=True)
    model = model.to(device).float()  # fp32 master weights (bf16 autocast on GPU inside compute_loss)
    optimizer = make_optimizer(model, config.train)
    budget = StepBudget(wc.steps, wc.minutes, state.get("total_steps") if resume is not None else None)
    horizon = [budget.total]  # the schedule reads the current count (a plain lambda keeps its state_dict JSON-able)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.train, horizon[0]))
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
        scheduler.load_state_dict(sched_state)
    loss_module = ray.train.torch.prepare_model(TrainingLoss(model), move_to_device=False)

    local_bs = wc.batch_size // world
    sizes = BatchMixer.stream_batch_sizes(wc.stream_names, wc.fractions, local_bs)
    streams = {name: SampleStream(ray.train.get_dataset_shard(name), n, wc.seed * 7 + rank,
                                  StreamPosition(**positions.get(name, {})))
               for name, n in sizes.items() if n > 0}
    mixer = BatchMixer(streams, wc.fractions, local_bs, wc.seed + rank)
    text_on_device = {k: v.to(device) for k, v in text_table.items()}
    log = _MetricLog(wc.progress if rank == 0 else None)
    generator = torch.Generator(device=device)
    window_t0, window_steps, train_t0, first_step = time.perf_counter(), 0, time.perf_counter(), step
    steady: dict[str, float] = {}  # from the end of the first report window (start-up excluded)

    def report(with_checkpoint: bool) -> None:
        nonlocal window_t0, window_steps
        now = time.perf_counter()
        elapsed = now - window_t0
        metrics = log.flush()
        if not steady:
            steady.update(t=now, step=step, log_s=log.send_seconds)
        elif step > steady["step"]:
            metrics["steady_samples_per_s"] = (step - steady["step"]) * local_bs * world / (now - steady["t"])
            metrics["mlflow_overhead"] = (log.send_seconds - steady["log_s"]) / (now - steady["t"])
        metrics.update(step=step, lr=scheduler.get_last_lr()[0], epoch=min(s.position.epoch for s in streams.values()),
                       samples_per_s=window_steps * local_bs * world / max(elapsed, 1e-9),
                       mlflow_send_s=log.send_seconds, train_s=time.perf_counter() - train_t0,
                       steps_this_run=step - first_step, total_steps=budget.total,
                       budget_elapsed_s=budget.elapsed(now))
        if rank == 0 and wc.progress is not None:
            wc.progress.update.remote({**metrics, "total": budget.total})
            wc.progress.log.remote([(step, {"samples_per_s": metrics["samples_per_s"]})])
        metrics["node_id"] = ray.get_runtime_context().get_node_id()  # where this worker trained
        pos = {name: asdict(s.position) for name, s in streams.items()}
        if with_checkpoint and rank == 0:
            with tempfile.TemporaryDirectory(prefix="cosmos-ckpt-") as tmp:
                # the checkpoint records the step count the schedule used (a time budget resolves it at run time)
                model.config = replace(config, train=replace(config.train, steps=budget.total))
                save_train_checkpoint(Path(tmp), model, stats, optimizer, scheduler, step, pos, wc.extra,
                                      total_steps=budget.total)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)
        window_t0, window_steps = time.perf_counter(), 0

    if step >= budget.total:  # a finished run started again: report its final checkpoint once more
        report(with_checkpoint=True)
        return
    # the budget counts from the driver's start of the run (Ray start-up included), on this process's clock
    since_start = max(0.0, time.time() - wc.started_at) if wc.started_at is not None else 0.0
    budget.start(time.perf_counter() - since_start)
    budget_open = not budget.fixed  # the same on every rank (config and checkpoint)
    while step < budget.total:
        rows, types = mixer.next(step)
        batch = batch_from_rows(rows, types, config.layout, stats)
        batch.text = torch.stack([text_on_device[s] for s in batch.instructions])
        batch = batch.to(device)
        generator.manual_seed(step_seed(wc.seed, rank, step))
        metrics = train_step(model, optimizer, batch, generator, loss_module=loss_module)
        scheduler.step()
        step += 1
        window_steps += 1
        if rank == 0:
            log.add(step, {**metrics, "lr": scheduler.get_last_lr()[0]})
        if budget_open and step % wc.report_every == 0 and step < budget.total:  # the count may move
            budget.observe(step, time.perf_counter())
            if world > 1:  # every rank runs rank 0's count (their clocks differ)
                shared = torch.tensor([budget.total, int(budget.fixed)], dtype=torch.long, device=device)
                torch.distributed.broadcast(shared, src=0)
                budget.adopt(int(shared[0]), bool(shared[1]))
            budget_open, horizon[0] = not budget.fixed, budget.total
        last = step >= budget.total
        if last or step % wc.checkpoint_every == 0:
            report(with_checkpoint=True)
        elif step % wc.report_every == 0:
            report(with_checkpoint=False)
