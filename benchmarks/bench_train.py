"""Benchmark training on Ray Train against a plain loop, 2 workers against 1, and the cost of MLflow logging.

Same model (tiny preset), same samples (synthetic demos written to a real lake, read through the latent cache),
same global batch and threads per process, measured side by side in one run:

* ``raytrain_over_plain``: samples/s of ``flywheel train``'s entry point (:func:`tasks.training.train_model`, Ray
  Train, 1 worker, 1 thread) ÷ a plain single-process loop (1 thread) over the same rows with the same batch
  mixer and ``train_step``. Runs alternate A B B A (repeated); start-up (Ray, worker imports, first report window)
  is excluded on the Ray side (``steady_samples_per_s``) and the first steps are excluded on the plain side.
* ``scaling_2v1``: steady samples/s with 2 DDP workers (1 thread each) ÷ 1 worker, alternated A B B A, on this
  machine's cores (2 here: each worker gets one).
* ``mlflow_overhead``: share of rank 0's training time spent handing per-step metrics to the tracker actor (sent
  every ``train.report_every`` steps), from the 1-worker Ray runs; ``mlflow_driver_share``: the tracker's time
  writing them to MLflow (on the driver's node, concurrently) ÷ the training time.
* ``ray_startup_s``: wall time of a Ray training minus its steady training time (start-up + registration).

Usage: ``python benchmarks/bench_train.py [--quick]``; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_loop(cfg, ws, suite: str, steps: int, warmup: int) -> float:
    """Samples/s of a single-process loop over the rows the Ray datasets hold (after ``warmup`` steps)."""
    import torch

    from cosmos_policy.samples import batch_from_rows, concat_rows
    from cosmos_policy.train_step import make_lr_scheduler, make_optimizer, train_step
    from tasks.train_data import BatchMixer, InMemoryShard, SampleStream, read_samples
    from tasks.train_loop import step_seed
    from tasks.training import fill_cache, prepare

    prep = prepare(cfg, ws, suite, None, "base", None, None)
    cache = fill_cache(ws, prep, progress=False)
    model, train_cfg = prep.model.float(), prep.model.config.train
    rows = []
    for r in prep.selection.episodes.to_pylist():
        desc = {"episode_id": [r["episode_id"]], "success": [bool(r["success"])], "is_demo": [True],
                "instruction": [r["instruction"]], "length": [int(r["length"])]}
        rows.append(read_samples(desc, str(ws.lake.root), str(cache), model.layout.to_dict(), cfg.model.gamma))
    fractions = train_cfg.mix_fractions("base")
    streams = {"demo": SampleStream(InMemoryShard(concat_rows(rows)), train_cfg.batch_size, 0)}
    mixer = BatchMixer(streams, fractions, train_cfg.batch_size, 0)
    text = {s: model.encode_text([s])[0] for s in set(concat_rows(rows)["instruction"])}
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_lr_scheduler(optimizer, train_cfg, steps)
    generator = torch.Generator()
    t0 = 0.0
    for step in range(steps):
        if step == warmup:
            t0 = time.perf_counter()
        r, types = mixer.next(step)
        batch = batch_from_rows(r, types, model.layout, prep.stats)
        batch.text = torch.stack([text[s] for s in batch.instructions])
        generator.manual_seed(step_seed(0, 0, step))
        train_step(model, optimizer, batch, generator)
        scheduler.step()
    return (steps - warmup) * train_cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one A B B A round, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    args = parser.parse_args()
    steps = args.steps or (150 if args.quick else 400)
    rounds = 1 if args.quick else 2

    home = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    from flywheel.cli.common import setup
    from tasks.runtime import init_ray
    from tasks.training import train_model
    from tests.fixtures.lake import write_synthetic_episodes

    base = [f"train.steps={steps}", f"train.checkpoint_every={steps}", "train.report_every=20",
            "train.batch_size=16", "train.warmup_steps=0"]
    cfg, ws = setup("cpu", None, base, home)
    write_synthetic_episodes(ws.lake.root, demos=8, length=120, image_every=16)
    init_ray(cfg, ws, num_cpus=(os.cpu_count() or 2) + 1)  # a logical CPU for the data pipeline (see STACK notes)
    import torch

    torch.set_num_threads(1)  # like a Ray worker with one CPU
    seed = iter(range(1000))

    def ray_run(workers: int) -> dict:
        c, w = setup("cpu", None, [*base, f"train.num_workers={workers}", f"train.seed={next(seed)}"], home)
        t0 = time.perf_counter()
        result = train_model(c, w, "libero_object", progress=False)
        wall = time.perf_counter() - t0
        m = result.metrics
        print(f"  ray {workers} worker(s): {m['steady_samples_per_s']:.1f} samples/s steady, mlflow "
              f"{m['mlflow_overhead']:.3f}, wall {wall:.0f}s", flush=True)
        return {"sps": m["steady_samples_per_s"], "mlflow": m["mlflow_overhead"],
                "mlflow_driver": m.get("mlflow_log_s", float("nan")) / m["train_s"], "startup": wall - m["train_s"]}

    def plain_run() -> float:
        sps = plain_loop(cfg, ws, "libero_object", steps, warmup=20)
        print(f"  plain loop: {sps:.1f} samples/s", flush=True)
        return sps

    ray1, plain, ray2 = [], [], []
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}: Ray Train 1 worker vs plain loop (A B B A)", flush=True)
        ray1.append(ray_run(1))
        plain.append(plain_run())
        plain.append(plain_run())
        ray1.append(ray_run(1))
        print(f"round {r + 1}/{rounds}: 2 workers vs 1 (A B B A)", flush=True)
        ray2.append(ray_run(2))
        ray1.append(ray_run(1))
        ray1.append(ray_run(1))
        ray2.append(ray_run(2))
    med = statistics.median
    out = {
        "raytrain_over_plain": round(med(r["sps"] for r in ray1) / med(plain), 3),
        "scaling_2v1": round(med(r["sps"] for r in ray2) / med(r["sps"] for r in ray1), 3),
        "mlflow_overhead": round(med(r["mlflow"] for r in ray1), 4),
        "mlflow_driver_share": round(med(r["mlflow_driver"] for r in ray1), 4),
        "ray_startup_s": round(med(r["startup"] for r in ray1), 1),
        "samples_per_s": {"ray1": round(med(r["sps"] for r in ray1), 1), "ray2": round(med(r["sps"] for r in ray2), 1),
                          "plain": round(med(plain), 1)},
        "steps": steps, "rounds": rounds, "batch_size": 16, "preset": "tiny", "threads_per_process": 1,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
