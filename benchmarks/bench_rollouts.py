"""Rollout engine benchmark: overhead vs a bare environment loop, 2-worker vs 1-worker scaling, where a learned
policy runs (driver or actor), and how its queries are scheduled (lockstep rounds or ready-first).

Usage: ``python benchmarks/bench_rollouts.py [--quick] [--suite libero_object] [--skip-placement] [--schedule]``.
Engine figures: same trivial policy (uniform random actions, 16-step chunks), same episodes (task, init state, seed),
cameras off (``image_every=0``) so they measure the engine, not software rendering; environment construction is
excluded on both sides. ``--schedule``: an untrained tiny Cosmos Policy as the ``cpu`` profile evaluates it (64 px
without antialiasing, 8 of 16 actions executed, direct and planning N=4 W=1 V=2) on 2 workers, episodes to the
step limit, ``lockstep=True`` vs the default ready-first schedule, in A B B A order. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from flywheel.compat import set_default_env  # noqa: E402

set_default_env()


def bare_loop(env, requests, chunk_size: int = 16) -> tuple[int, float]:
    """Steps and seconds of the plain loop: reset, then random chunks until done (what a worker does, minus Ray)."""
    from sims.random_policy import RandomPolicy

    policy = RandomPolicy(env.action_dim, chunk_size=chunk_size)
    steps, t0 = 0, time.perf_counter()
    for req in requests:
        policy.reseed(req.seed)
        obs = env.reset(req.task_id, req.init_state_index, req.seed)
        done = False
        while not done:
            for action in policy.act([obs], [""])[0]:
                res = env.step(action, render=False)
                steps += 1
                obs, done = res.observation, res.done
                if done:
                    break
    return steps, time.perf_counter() - t0


def engine_run(ray, suite: str, image_size: int, requests, workers: int, lake: Path) -> tuple[int, float]:
    from sims.factory import make_env
    from storage_schemas import LakeWriter
    from tasks.rollout_engine import BehaviourSpec, RolloutEngine

    engine = RolloutEngine(ray, functools.partial(make_env, suite, image_size), BehaviourSpec("random"), num_workers=workers)
    try:
        engine.wait_ready()
        warm = [dataclasses.replace(r, seed=10_000 + i) for i, r in enumerate(requests[:workers])]
        engine.run(warm, None, dataset_id="warm-up")  # every worker builds its scene before timing, like the bare loop
        stats = engine.run(requests, LakeWriter(lake), dataset_id="bench")
    finally:
        engine.shutdown()
    return stats.env_steps, stats.wall_s


def placement_run(ray, suite: str, requests, placement: str, checkpoint: str, lockstep: bool = False,
                  planning: bool = False, execute_actions: int | None = None, antialias: bool = True,
                  ) -> tuple[int, float, float]:
    """Throughput of a tiny Cosmos Policy batched across 2 workers, policy in the driver or in an actor."""
    from sims.factory import make_env
    from tasks.batched_rollouts import PolicyHandle, run_batched
    from tasks.rollout_engine import BehaviourSpec, RolloutEngine
    from tasks.rollouts import load_cosmos_policy

    engine = RolloutEngine(ray, functools.partial(make_env, suite, 64, antialias=antialias), BehaviourSpec("external"),
                           num_workers=2)
    n, w, v = (4, 1, 2) if planning else (1, 1, 1)
    handle = PolicyHandle(ray, functools.partial(load_cosmos_policy, checkpoint, planning, n, w, v, sampler_steps=4),
                          placement)
    try:
        engine.wait_ready()
        run_batched(engine, handle, [dataclasses.replace(r, seed=20_000 + i) for i, r in enumerate(requests[:2])],
                    None, "warm-up", execute_actions=execute_actions, lockstep=lockstep)
        stats = run_batched(engine, handle, requests, None, "bench", execute_actions=execute_actions, lockstep=lockstep)
    finally:
        handle.close()
        engine.shutdown()
    return stats.env_steps, stats.wall_s, float(np.mean(handle.batch_sizes))


def schedule_runs(ray, suite: str, requests, tmp: Path) -> dict[str, dict[str, float]]:
    """Lockstep vs ready-first queries of an untrained tiny model (the cpu profile's inference), A B B A."""
    from cosmos_policy.checkpoint_io import save_untrained_checkpoint
    from cosmos_policy.latent_layout import libero_layout

    ckpt = str(save_untrained_checkpoint(tmp / "ckpt-schedule", libero_layout()))
    reqs = [dataclasses.replace(r, policy="model", image_every=16) for r in requests[:2]]
    out = {}
    for mode, planning in (("direct", False), ("planning", True)):
        runs: dict[bool, list[tuple[int, float, float]]] = {True: [], False: []}
        for lockstep in (True, False, False, True):
            runs[lockstep].append(placement_run(ray, suite, reqs, "driver", ckpt, lockstep=lockstep,
                                                planning=planning, execute_actions=8, antialias=False))
        sps = {k: sum(x[0] for x in v) / sum(x[1] for x in v) for k, v in runs.items()}
        out[mode] = {"lockstep_steps_per_s": round(sps[True], 1), "ready_first_steps_per_s": round(sps[False], 1),
                     "ready_first_over_lockstep": round(sps[False] / sps[True], 3),
                     "mean_batch_ready_first": round(float(np.mean([x[2] for x in runs[False]])), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer episodes (about 2 minutes)")
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--episodes", type=int, default=None, help="episodes per measurement (default 4 quick / 8 full)")
    ap.add_argument("--skip-placement", action="store_true", help="skip the driver-vs-actor policy placement runs")
    ap.add_argument("--schedule", action="store_true", help="also compare lockstep and ready-first policy queries")
    args = ap.parse_args()
    n = args.episodes or (4 if args.quick else 8)

    import ray

    from flywheel.recordings import EpisodeRequest
    from sims.factory import make_env

    # One task: a task switch rebuilds the scene (seconds), which would swamp the engine's own cost.
    requests = [EpisodeRequest(args.suite, 0, i, seed=i, policy="random", image_every=0) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=os.path.join(tmp, "ray"), logging_level="error",
                 log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}})
        env = make_env(args.suite, 64)
        bare_loop(env, requests[:1])  # warm-up: build the task scenes
        bare = [bare_loop(env, requests)]
        one = engine_run(ray, args.suite, 64, requests, 1, Path(tmp) / "lake1")
        two = engine_run(ray, args.suite, 64, requests, 2, Path(tmp) / "lake2")
        bare.append(bare_loop(env, requests))  # bare measured before and after: machine drift hits both sides
        if not args.skip_placement:
            from cosmos_policy.checkpoint_io import save_untrained_checkpoint
            from cosmos_policy.latent_layout import libero_layout

            ckpt = str(save_untrained_checkpoint(Path(tmp) / "ckpt", libero_layout()))
            model_reqs = [dataclasses.replace(r, policy="model", image_every=16) for r in requests[: max(2, n // 2)]]
            runs = {"driver": [], "actor": []}
            for placement in ("driver", "actor", "actor", "driver"):  # ABBA order against drift
                runs[placement].append(placement_run(ray, args.suite, model_reqs, placement, ckpt))
            drv, act = ([sum(x[0] for x in runs[p]), sum(x[1] for x in runs[p]), runs[p][0][2]] for p in ("driver", "actor"))
        if args.schedule:
            schedule = schedule_runs(ray, args.suite, requests, Path(tmp))
        env.close()
        ray.shutdown()
    bare_sps = sum(s for s, _ in bare) / sum(t for _, t in bare)
    one_sps, two_sps = one[0] / one[1], two[0] / two[1]
    result = {
        "quick": args.quick, "suite": args.suite, "episodes": n, "steps_per_run": one[0],
        "bare_steps_per_s": round(bare_sps, 1), "engine_1w_steps_per_s": round(one_sps, 1),
        "engine_2w_steps_per_s": round(two_sps, 1),
        "engine_overhead": round(1 - one_sps / bare_sps, 3), "scaling_2v1": round(two_sps / one_sps, 3),
        "goals": {"engine_overhead": "<= 0.15", "scaling_2v1": ">= 1.9"},
    }
    if not args.skip_placement:
        result.update({"model_driver_steps_per_s": round(drv[0] / drv[1], 1), "model_actor_steps_per_s": round(act[0] / act[1], 1),
                       "driver_over_actor": round((drv[0] / drv[1]) / (act[0] / act[1]), 3),
                       "model_mean_batch": round(drv[2], 2)})
        print(f"tiny Cosmos Policy on 2 workers: driver {result['model_driver_steps_per_s']} steps/s, "
              f"actor {result['model_actor_steps_per_s']} steps/s -> driver/actor = {result['driver_over_actor']}")
    if args.schedule:
        result["schedule"] = schedule
        for mode, r in schedule.items():
            print(f"{mode}: lockstep {r['lockstep_steps_per_s']} steps/s, ready-first {r['ready_first_steps_per_s']} "
                  f"steps/s -> ready-first/lockstep = {r['ready_first_over_lockstep']}")
    print(f"bare env {bare_sps:.1f} steps/s | engine 1 worker {one_sps:.1f} | 2 workers {two_sps:.1f}")
    print(f"engine_overhead = {result['engine_overhead']}  scaling_2v1 = {result['scaling_2v1']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
