"""Benchmark camera rendering with and without antialiasing (``sim.antialias``) on this machine; ``--meshes``:
with the shipped visual meshes and with coarser ones (``sim.mesh_resolution``).

One LIBERO environment (one GL context per process), switched between rendering as robosuite does (4x
multisampling in a 640x480 offscreen buffer) and ``antialias=False`` (one sample per pixel, an ``image_size``
buffer); each run renders both cameras through the adapter's real ``render()``, same state. Runs alternate
A B B A and repeat; the ratio is the median frame time with antialiasing over the median without. Also printed:
the physics cost of one ``step`` without rendering (for scale) and the mean absolute pixel difference between the
two renders of the same state.

On a machine without a GPU, MuJoCo renders through Mesa's software rasteriser (llvmpipe), and a LIBERO scene holds
~840k visual mesh vertices, so one frame costs several physics steps.

``--meshes R``: two environments in one process, both without antialiasing, one with the shipped meshes and one
with visual meshes clustered at resolution ``R`` (:mod:`sims.mesh_detail`); each run renders both cameras of the
same state through ``render()``, A B B A; the ratio is full over coarse. The mean absolute pixel difference is
taken after the same random actions in both (physics is unchanged, so the states are equal).

Usage: ``python benchmarks/bench_render.py [--quick] [--size 64] [--suite libero_object] [--meshes 32]``; the last
stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10 renders")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--meshes", type=int, default=None, metavar="R", help="compare shipped vs coarse meshes")
    args = parser.parse_args()
    rounds, frames = (2, 10) if args.quick else (4, 25)
    if args.meshes is not None:
        return compare_meshes(args, rounds, frames)

    import numpy as np

    from flywheel.compat import set_default_env

    set_default_env()
    from sims.libero_env import LiberoEnv

    env = LiberoEnv(args.suite, args.size)
    env.reset(0, 40, 0)
    zero = np.zeros(7)

    def frame_ms(aa: bool) -> float:
        env.antialias = aa
        env.render()  # warm (the first render after a switch rebuilds the context)
        t0 = time.perf_counter()
        for _ in range(frames):
            env.render()
        return 1000 * (time.perf_counter() - t0) / frames

    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for aa in (True, False, False, True):
            times[aa].append(frame_ms(aa))
        print(f"round {r + 1}/{rounds}: antialias {times[True][-1]:.1f} ms, without {times[False][-1]:.1f} ms "
              f"(both cameras)", flush=True)
    t0 = time.perf_counter()
    for _ in range(frames):
        env.step(zero, render=False)
    physics = 1000 * (time.perf_counter() - t0) / frames
    env.antialias = True
    a = env.render()
    env.antialias = False
    b = env.render()
    diff = float(np.mean([np.abs(a[c].astype(float) - b[c].astype(float)).mean() for c in a]))
    med = statistics.median
    out = {"antialias_over_plain": round(med(times[True]) / med(times[False]), 3),
           "frame_ms": {"antialias": round(med(times[True]), 1), "plain": round(med(times[False]), 1)},
           "physics_step_ms": round(physics, 1), "mean_abs_pixel_diff": round(diff, 2),
           "image_size": args.size, "suite": args.suite, "rounds": rounds, "frames_per_run": frames}
    env.close()
    print(json.dumps(out))


def compare_meshes(args: argparse.Namespace, rounds: int, frames: int) -> None:
    import numpy as np

    from flywheel.compat import set_default_env

    set_default_env()
    from sims.libero_env import LiberoEnv

    envs = {name: LiberoEnv(args.suite, args.size, antialias=False, mesh_resolution=res)
            for name, res in (("full", None), ("coarse", args.meshes))}
    for env in envs.values():
        env.reset(0, 40, 0)
        env.render()  # the first render simplifies and rebuilds the context

    def frame_ms(name: str) -> float:
        t0 = time.perf_counter()
        for _ in range(frames):
            envs[name].render()
        return 1000 * (time.perf_counter() - t0) / frames

    times: dict[str, list[float]] = {"full": [], "coarse": []}
    for r in range(rounds):
        for name in ("full", "coarse", "coarse", "full"):
            times[name].append(frame_ms(name))
        print(f"round {r + 1}/{rounds}: shipped meshes {times['full'][-1]:.1f} ms, coarse {times['coarse'][-1]:.1f} ms "
              f"(both cameras)", flush=True)
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, size=(20, 7))
    diffs = []
    for a in actions:
        frames_now = {name: env.step(a, render=True).observation.images for name, env in envs.items()}
        diffs += [np.abs(frames_now["full"][c].astype(float) - frames_now["coarse"][c].astype(float)).mean()
                  for c in frames_now["full"]]
    faces = {name: int(env._env.sim.model._model.mesh_facenum.sum()) for name, env in envs.items()}
    med = statistics.median
    out = {"full_over_coarse": round(med(times["full"]) / med(times["coarse"]), 3),
           "frame_ms": {"full": round(med(times["full"]), 1), "coarse": round(med(times["coarse"]), 1)},
           "triangles": faces, "mesh_resolution": args.meshes, "mean_abs_pixel_diff": round(float(np.mean(diffs)), 2),
           "image_size": args.size, "suite": args.suite, "rounds": rounds, "frames_per_run": frames}
    for env in envs.values():
        env.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
