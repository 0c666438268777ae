"""Lake benchmark: writer throughput vs plain ``pyarrow.parquet.write_table`` and canned-report latency.

Usage: ``python benchmarks/bench_lake.py [--quick]``. Both sides of every ratio are measured in the
same run, interleaved, median of repeats. The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage_schemas import EPISODES_SCHEMA, SCHEMA_VERSION, STEPS_SCHEMA, LakeWriter, Table
from storage_schemas.views import connect, run_reports

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


def _lists(n_rows: int, dim: int, rng: np.random.Generator) -> pa.Array:
    offsets = pa.array(np.arange(0, (n_rows + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(rng.standard_normal(n_rows * dim).astype(np.float32)))


def synthetic_tables(n_episodes: int, steps_per_episode: int, iteration_count: int, seed: int = 0,
                     suites: tuple[str, ...] = SUITES) -> tuple[pa.Table, pa.Table]:
    """Episodes/steps tables (with partition columns) shaped like real rollouts, built vectorised."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"rollout-{seed:02d}{i:012d}" for i in range(n_episodes)], dtype=object)
    suite = np.array(suites, dtype=object)[rng.integers(0, len(suites), n_episodes)]
    iteration = rng.integers(0, iteration_count, n_episodes).astype(np.int32)
    success = rng.random(n_episodes) < 0.6
    lengths = np.full(n_episodes, steps_per_episode, np.int32)  # fixed length keeps the step count exact
    now = datetime.now(UTC)
    eps = pa.table({
        "episode_id": pa.array(ids, pa.string()), "schema_version": pa.array(np.full(n_episodes, SCHEMA_VERSION, np.int16)),
        "dataset_id": pa.array(["bench"] * n_episodes), "task_id": pa.array(rng.integers(0, 10, n_episodes).astype(np.int32)),
        "instruction": pa.array(["do the task"] * n_episodes), "policy": pa.array(["model"] * n_episodes),
        "policy_version": pa.array(["v1"] * n_episodes), "planning": pa.array(rng.random(n_episodes) < 0.5),
        "seed": pa.array(np.arange(n_episodes, dtype=np.int64)), "init_state_index": pa.array(rng.integers(0, 50, n_episodes).astype(np.int32)),
        "success": pa.array(success), "terminal_reward": pa.array(success.astype(np.float32)),
        "length": pa.array(lengths), "wall_time_s": pa.array(rng.random(n_episodes).astype(np.float32)),
        "gamma": pa.array(np.full(n_episodes, 0.99, np.float32)), "action_dim": pa.array(np.full(n_episodes, 7, np.int16)),
        "proprio_dim": pa.array(np.full(n_episodes, 9, np.int16)),
        "cameras": pa.array([["agentview", "eye_in_hand"]] * n_episodes, pa.list_(pa.string())),
        "error": pa.nulls(n_episodes, pa.string()), "created_at": pa.array([now] * n_episodes, pa.timestamp("us", tz="UTC")),
    }).cast(EPISODES_SCHEMA)
    n = int(lengths.sum())
    t = np.concatenate([np.arange(L, dtype=np.int32) for L in lengths])
    steps = pa.table({
        "episode_id": pa.array(np.repeat(ids, lengths), pa.string()), "schema_version": pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
        "dataset_id": pa.array(np.full(n, "bench", dtype=object), pa.string()), "t": pa.array(t),
        "proprio": _lists(n, 9, rng), "action": _lists(n, 7, rng), "reward": pa.array(np.zeros(n, np.float32)),
        "done": pa.array(t == np.repeat(lengths - 1, lengths)), "value_target": pa.array(rng.random(n).astype(np.float32)),
        "images": pa.nulls(n, pa.map_(pa.string(), pa.binary())), "object_state": pa.nulls(n, pa.list_(pa.float32())),
    }).cast(STEPS_SCHEMA)

    def parts(table: pa.Table, reps: np.ndarray) -> pa.Table:
        table = table.append_column("source", pa.array(np.full(int(reps.sum()), "rollout", dtype=object), pa.string()))
        table = table.append_column("iteration", pa.array(np.repeat(iteration, reps)))
        return table.append_column("suite", pa.array(np.repeat(suite, reps), pa.string()))

    return parts(eps, np.ones(n_episodes, np.int64)), parts(steps, lengths.astype(np.int64))


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def bench_write(n_episodes: int, steps_per_episode: int, repeats: int, work: Path) -> dict:
    # One shard = one partition (a rollout shard or an ingestion chunk has one source/iteration/suite).
    eps, steps = synthetic_tables(n_episodes, steps_per_episode, iteration_count=1, seed=1, suites=SUITES[:1])
    plain_eps, plain_steps = eps.drop_columns(["source", "iteration", "suite"]), steps.drop_columns(["source", "iteration", "suite"])
    lake_s, plain_s = [], []
    for r in range(repeats):  # interleaved: the machine's noise hits both sides alike
        d = work / f"plain{r}"
        d.mkdir()
        t0 = time.perf_counter()
        pq.write_table(plain_eps, d / "episodes.parquet")
        pq.write_table(plain_steps, d / "steps.parquet")
        plain_s.append(time.perf_counter() - t0)
        writer = LakeWriter(work / f"lake{r}")
        t0 = time.perf_counter()
        writer.write_tables(Table.EPISODES, {Table.EPISODES: eps, Table.STEPS: steps})
        lake_s.append(time.perf_counter() - t0)
    plain, lake = statistics.median(plain_s), statistics.median(lake_s)
    rows = eps.num_rows + steps.num_rows
    return {"write_ratio": round(plain / lake, 3), "lake_rows_per_s": round(rows / lake), "plain_rows_per_s": round(rows / plain),
            "write_rows": rows}


def bench_report(n_episodes: int, steps_per_episode: int, repeats: int, work: Path) -> dict:
    writer = LakeWriter(work / "report-lake")
    for shard in range(4):  # several shards per partition, then compaction, like a real night
        eps, steps = synthetic_tables(n_episodes // 4, steps_per_episode, iteration_count=5, seed=10 + shard)
        writer.write_tables(Table.EPISODES, {Table.EPISODES: eps, Table.STEPS: steps})
    writer.compact()
    con = connect(writer.layout)
    n_eps = con.sql("select count(*) from episodes").fetchall()[0][0]
    n_steps = con.sql("select count(*) from steps").fetchall()[0][0]
    run_reports(con)  # warm the OS page cache
    warm = _time(lambda: run_reports(con), repeats)
    cold = _time(lambda: run_reports(connect(writer.layout)), repeats)
    return {"report_ms": round(warm * 1000, 1), "report_with_connect_ms": round(cold * 1000, 1),
            "report_lake_episodes": n_eps, "report_lake_steps": n_steps, "lake_files": len(writer.layout.parts("episodes"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a few seconds)")
    args = ap.parse_args()
    write_eps, report_eps, repeats = (200, 2000, 3) if args.quick else (2000, 10000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"quick": args.quick}
        result.update(bench_write(write_eps, 100, repeats, work))
        print(f"write: lake {result['lake_rows_per_s']:,} rows/s vs plain write_table {result['plain_rows_per_s']:,} rows/s "
              f"-> ratio {result['write_ratio']}")
        result.update(bench_report(report_eps, 100, repeats, work))
        print(f"report over {result['report_lake_episodes']:,} episodes / {result['report_lake_steps']:,} steps: "
              f"{result['report_ms']} ms ({result['report_with_connect_ms']} ms with connect)")
        result["goals"] = {"write_ratio": ">= 0.8", "report_ms": "< 100"}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
