"""Scripted-expert success table per LIBERO task (cameras off).

Usage: ``python benchmarks/bench_expert.py [--quick] [--suite S ...] [--per-task N] [--tasks 0,1]``

Prints one line per task, then a Wilson 95% interval per suite, and as the *last stdout line* a JSON
object ``{"suites": {suite: {"success_rate", "successes", "episodes", "per_task": {...}}}, ...}``.
Tasks whose goal the expert cannot do are listed as unsupported (not run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sims.demos import record_episode  # noqa: E402
from sims.expert import ScriptedExpert, snapshot_supported  # noqa: E402
from sims.libero_env import LiberoEnv  # noqa: E402
from storage_schemas.stats import wilson_interval  # noqa: E402

DEFAULT_SUITES = ("libero_object", "libero_spatial", "libero_goal", "libero_10")


def run_suite(suite: str, per_task: int, tasks: list[int] | None, stride: int) -> dict:
    env = LiberoEnv(suite, image_size=64)
    expert = ScriptedExpert([env])
    per_task_out: dict[str, dict] = {}
    k_tot = n_tot = 0
    try:
        for task_id in tasks if tasks is not None else range(env.num_tasks):
            spec = env.task_spec(task_id)
            env.reset(task_id, 0, 0)
            snap = env.snapshot()
            goal = snap.goal
            if not snapshot_supported(snap):
                per_task_out[str(task_id)] = {"supported": False, "instruction": spec.instruction}
                print(f"{suite:15s} task {task_id}: unsupported  goal={goal}  ({spec.instruction})", flush=True)
                continue
            k = 0
            lengths, fails = [], []
            t0 = time.perf_counter()
            inits = [(i * stride) % spec.num_init_states for i in range(per_task)]
            for init in inits:
                rec = record_episode(env, expert, task_id, init, seed=init, image_every=0)
                if rec.error:
                    print(rec.error, file=sys.stderr)
                k += rec.success
                if rec.success:
                    lengths.append(rec.length)
                else:
                    fails.append(init)
            dt = time.perf_counter() - t0
            n = len(inits)
            k_tot, n_tot = k_tot + k, n_tot + n
            mean_len = sum(lengths) / max(len(lengths), 1)
            per_task_out[str(task_id)] = {
                "supported": True,
                "instruction": spec.instruction,
                "successes": k,
                "episodes": n,
                "success_rate": k / n,
                "mean_success_length": mean_len,
                "failed_init_states": fails,
                "seconds_per_episode": dt / n,
            }
            print(
                f"{suite:15s} task {task_id}: {k:3d}/{n:<3d} ({100 * k / n:5.1f}%)  len={mean_len:5.1f}  "
                f"{dt / n:4.1f}s/ep  failed={fails}  ({spec.instruction})",
                flush=True,
            )
    finally:
        env.close()
    lo, hi = wilson_interval(k_tot, n_tot)
    rate = k_tot / n_tot if n_tot else 0.0
    print(f"{suite:15s} supported tasks: {k_tot}/{n_tot} = {100 * rate:.1f}%  (Wilson 95% {lo:.3f}-{hi:.3f})")
    return {
        "success_rate": rate,
        "successes": k_tot,
        "episodes": n_tot,
        "wilson95": [lo, hi],
        "per_task": per_task_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="libero_object only, 2 init states per task")
    ap.add_argument("--suite", action="append", help="suite(s) to run (repeatable); default: all four")
    ap.add_argument("--per-task", type=int, default=5, help="init states per task (default 5)")
    ap.add_argument("--tasks", type=str, default=None, help="comma-separated task ids (default: all)")
    ap.add_argument("--stride", type=int, default=1, help="init-state index stride (spread over the 50)")
    args = ap.parse_args()
    suites = args.suite or (["libero_object"] if args.quick else list(DEFAULT_SUITES))
    per_task = 2 if args.quick and args.per_task == 5 else args.per_task
    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else None
    t0 = time.perf_counter()
    results = {s: run_suite(s, per_task, tasks, args.stride) for s in suites}
    summary = {
        "suites": {s: {k: v for k, v in r.items()} for s, r in results.items()},
        "success_rate": {s: r["success_rate"] for s, r in results.items()},
        "per_task": per_task,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
