"""Benchmark best-of-N planning batching, planning vs direct latency and tiny-preset training speed.

Measured side by side in one process on the ``tiny`` preset (random weights, LIBERO layout, one observation):

* ``batched_speedup``: latency of one planned chunk (N=8, 3 world x 5 value samples) computed call by call
  (``max_batch_size=1``: one candidate / one sample per forward) ÷ the same planning batched as the planner does
  it. Both use the same seed; ``same_choice`` reports whether they chose the same candidate.
* ``planning_over_direct``: planned chunk latency ÷ direct (parallel) chunk latency on the same observation.
* ``judge_full_over_one_call``: the ``cpu`` profile's planning (N=4, 1 world x 2 value samples, 4 solver steps for
  the candidates) with the world-model and value stages sampled like the candidates (4 solver steps + 1 clean call
  each) ÷ with one network call each (``eval.world_model_steps = eval.value_steps = 0``, the reference's LIBERO
  setting); alternated A B B A, repeated, median of each side.
* ``train_steps_per_s``: tiny-preset training steps per second at the preset batch size.

Usage: ``python benchmarks/bench_planning.py [--quick] [--threads 1]``; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from cosmos_policy.configuration_cosmos_policy import get_config
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import compute_stats
from cosmos_policy.planner import plan, row_seed, sample_chain
from cosmos_policy.samples import EpisodeArrays, build_batch, compose_batch_specs, encode_episode
from cosmos_policy.tokenizer import build_tokenizer
from cosmos_policy.train_step import make_optimizer, train_step


def _episodes(cfg, num: int, length: int, rng: np.random.Generator) -> list[EpisodeArrays]:
    lay = cfg.layout
    steps = np.array(sorted(set(range(0, length, lay.chunk_size)) | {length - 1}))
    size = cfg.tokenizer.image_size
    return [EpisodeArrays(
        images={c: rng.integers(0, 256, (len(steps), size, size, 3), dtype=np.uint8) for c in lay.camera_names},
        image_steps=steps, proprio=rng.normal(size=(length, lay.proprio_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(length, lay.action_dim)).astype(np.float32), success=e % 2 == 0,
        instruction=f"task {e % 3}", is_demo=e % 2 == 0) for e in range(num)]


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and train steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads for both sides (default: all cores; use 1 on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    repeats = 1 if args.quick else 3
    train_steps = 5 if args.quick else 20

    cfg = get_config("tiny", libero_layout())
    model = CosmosPolicyModel(cfg).eval()
    rng = np.random.default_rng(args.seed)
    tok = build_tokenizer(cfg.tokenizer)
    episodes = [encode_episode(tok, ep) for ep in _episodes(cfg, 4, 64, rng)]
    stats = compute_stats([e.proprio for e in episodes if e.is_demo], [e.actions for e in episodes if e.is_demo])
    specs = compose_batch_specs(episodes, cfg.train.batch_size, cfg.train.fractions, cfg.layout.chunk_size, rng)
    batch = build_batch(episodes, specs, cfg.layout, stats)

    current = batch.latents[:1]
    text = model.encode_text(batch.instructions[:1])
    planner = cfg.planner
    unbatched = replace(planner, max_batch_size=1)

    plan(model, current, text, planner, seed=args.seed)  # warm-up
    t_batched, out_b = _time(lambda: plan(model, current, text, planner, seed=args.seed), repeats)
    t_unbatched, out_u = _time(lambda: plan(model, current, text, unbatched, seed=args.seed), 1)
    seeds = [row_seed(args.seed, 0)]
    t_direct, _ = _time(lambda: sample_chain(model, current, text, seeds, "parallel"), max(3, repeats))

    cpu_plan = replace(planner, num_candidates=4, num_world_samples=1, num_value_samples=2)
    four = replace(cfg, sampler=replace(cfg.sampler, num_steps=4))
    model.config = four
    judges = {"full": cpu_plan, "one_call": replace(cpu_plan, world_model_steps=0, value_steps=0)}
    judge_times: dict[str, list[float]] = {k: [] for k in judges}
    for name in judges:
        plan(model, current, text, judges[name], seed=args.seed)  # warm-up
    for _ in range(2 if args.quick else 5):
        for name in ("full", "one_call", "one_call", "full"):
            judge_times[name].append(_time(lambda n=name: plan(model, current, text, judges[n], seed=args.seed), 1)[0])
    model.config = cfg

    model.train()
    opt = make_optimizer(model, cfg.train)
    gen = torch.Generator().manual_seed(args.seed)
    train_step(model, opt, batch, gen)  # warm-up
    t0 = time.perf_counter()
    for _ in range(train_steps):
        train_step(model, opt, batch, gen)
    steps_per_s = train_steps / (time.perf_counter() - t0)

    result = {
        "batched_speedup": round(t_unbatched / t_batched, 3),
        "planning_over_direct": round(t_batched / t_direct, 3),
        "judge_full_over_one_call": round(statistics.median(judge_times["full"])
                                          / statistics.median(judge_times["one_call"]), 3),
        "judge_chunk_s": {k: round(statistics.median(v), 4) for k, v in judge_times.items()},
        "train_steps_per_s": round(steps_per_s, 3),
        "same_choice": bool(torch.equal(out_b.chosen, out_u.chosen)),
        "chosen": out_b.chosen.tolist(),
        "planned_chunk_s": round(t_batched, 4),
        "unbatched_chunk_s": round(t_unbatched, 4),
        "direct_chunk_s": round(t_direct, 4),
        "forward_calls_batched": out_b.num_forward_calls,
        "forward_calls_unbatched": out_u.num_forward_calls,
        "plan": {"N": planner.num_candidates, "world": planner.num_world_samples,
                 "value": planner.num_value_samples, "steps": cfg.sampler.num_steps, "solver": cfg.sampler.solver},
        "train_batch_size": cfg.train.batch_size,
        "params": model.num_parameters(),
        "threads": args.threads,
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
