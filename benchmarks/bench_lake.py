"""Lake benchmark: writer throughput vs plain ``pyarrow.parquet.write_table`` and canned-report latency.

Usage: ``python benchmarks/bench_lake.py [--quick]``. Both sides of every ratio are measured in the
same run, interleaved, median of repeats. The last stdout line is a JSON object.

Write: ``LakeWriter.write_episodes`` (the real entry point: episodes -> tables, dims and schema checks, the
scan of the partition's earlier parts for ids to replace, temp files, journal, renames) of one shard of
rollout-shaped episodes (100 steps, proprio 9, action 7, object state 44, two 64x64 cameras every 4th step
as precomputed PNG bytes) into a partition that already holds several parts, vs ``pq.write_table`` of the
same episodes + steps tables built beforehand. ``write_ratio`` is against pyarrow's default options (the
goal); ``write_ratio_same_options`` against ``write_table`` given the writer's per-column options (no
dictionary for vectors and images, PNG not recompressed), i.e. the writer's overhead over the bare file
writes. Sides alternate ABCCBA.
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

from storage_schemas import (
    EPISODES_SCHEMA,
    SCHEMA_VERSION,
    STEPS_SCHEMA,
    EpisodeData,
    EpisodeMeta,
    LakeWriter,
    Table,
    episodes_to_tables,
    rollout_episode_id,
)
from storage_schemas.records import encode_png
from storage_schemas.views import connect, run_reports
from storage_schemas.writer import _column_options

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


CAMERAS = ("agentview", "eye_in_hand")


def png_pool(n: int, image_size: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct PNGs of a rendered-looking frame (smooth blocks plus sensor noise), encoded once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        blocks = rng.integers(0, 256, (image_size // 8, image_size // 8, 3), dtype=np.int16)
        img = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1) + rng.integers(-6, 7, (image_size, image_size, 3))
        out.append(encode_png(np.clip(img, 0, 255).astype(np.uint8)))
    return out


def synthetic_episodes(n_episodes: int, steps: int, pngs: list[bytes], tag: str, seed: int = 0,
                       image_every: int = 4, object_dim: int = 44) -> list[EpisodeData]:
    """Episodes as a rollout shard hands them to the writer (``flywheel.recordings.to_episode``): one partition,
    proprio 9, action 7, LIBERO's object state, PNG bytes for two cameras every ``image_every``-th step and
    the last. PNGs are taken from the pool in turn: with a pool as large as the shard's images, no image
    repeats within a write (real frames never do, and repeats would let dictionary encoding dedupe them)."""
    rng = np.random.default_rng(seed)
    image_steps = sorted(set(range(0, steps, image_every)) | {steps - 1})
    episodes, k = [], 0
    for i in range(n_episodes):
        images = {}
        for cam in CAMERAS:
            images[cam] = {t: pngs[(k + j) % len(pngs)] for j, t in enumerate(image_steps)}
            k += len(image_steps)
        eid = rollout_episode_id("rollout", 1, SUITES[0], i % 10, i % 50, i, f"model@{tag}")  # hashed, as real ids
        meta = EpisodeMeta(episode_id=eid, source="rollout", suite=SUITES[0], task_id=i % 10,
                           instruction="put the bowl on the plate", dataset_id="bench", iteration=1, policy="model",
                           policy_version="models:/cosmos/3", seed=i, init_state_index=i % 50,
                           success=bool(rng.random() < 0.6), wall_time_s=float(rng.random()))
        episodes.append(EpisodeData(meta, rng.uniform(-1, 1, (steps, 9)).astype(np.float32),
                                    rng.uniform(-1, 1, (steps, 7)).astype(np.float32), images,
                                    rng.uniform(-1, 1, (steps, object_dim)).astype(np.float32)))
    return episodes


def bench_write(n_episodes: int, steps_per_episode: int, repeats: int, earlier_parts: int, work: Path) -> dict:
    """``LakeWriter.write_episodes`` (conversion, validation, id-replacement scan, journalled commit) of one shard
    into a partition already holding ``earlier_parts`` parts, vs ``pq.write_table`` of the same two tables (built
    once beforehand), with pyarrow's defaults and with the writer's own per-column Parquet options."""
    image_size = 64  # FlywheelConfig's default sim.image_size
    image_steps = len(set(range(0, steps_per_episode, 4)) | {steps_per_episode - 1})
    pngs = png_pool(n_episodes * len(CAMERAS) * image_steps, image_size)
    lake = LakeWriter(work / "write-lake").layout
    for p in range(earlier_parts):  # the partition already holds data: the replacement scan has parts to read
        LakeWriter(lake).write_episodes(synthetic_episodes(n_episodes, steps_per_episode, pngs, f"old{p}", seed=p))
    shards = [synthetic_episodes(n_episodes, steps_per_episode, pngs, f"new{r}", seed=100 + r) for r in range(repeats)]
    tables = {name: t.drop_columns(["source", "iteration", "suite"])
              for name, t in zip(("episodes", "steps"), episodes_to_tables(shards[0]), strict=True)}
    same = {name: dict(zip(("use_dictionary", "compression"), _column_options(t.schema, "snappy"), strict=True))
            for name, t in tables.items()}
    times: dict[str, list[float]] = {"plain": [], "plain_same_options": [], "lake": []}

    def plain(r: int, key: str = "plain") -> None:
        d = work / f"{key}{r}"
        d.mkdir()
        t0 = time.perf_counter()
        for name, t in tables.items():
            pq.write_table(t, d / f"{name}.parquet", **(same[name] if key != "plain" else {}))
        times[key].append(time.perf_counter() - t0)

    def lake_write(r: int) -> None:
        writer = LakeWriter(lake)  # a new writer: its id cache is cold, every earlier part is opened (a run's 1st write)
        t0 = time.perf_counter()
        writer.write_episodes(shards[r])
        times["lake"].append(time.perf_counter() - t0)

    sides = (plain, lambda r: plain(r, "plain_same_options"), lake_write)
    for r in range(repeats):  # ABCCBA...: the machine's noise and drift hit every side alike
        for side in sides if r % 2 == 0 else sides[::-1]:
            side(r)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = sum(t.num_rows for t in tables.values())
    mb = sum(f.stat().st_size for f in (work / "plain0").iterdir()) / 1e6
    return {"write_ratio": round(med["plain"] / med["lake"], 3),
            "write_ratio_same_options": round(med["plain_same_options"] / med["lake"], 3),
            "lake_write_ms": round(med["lake"] * 1000, 1), "plain_write_ms": round(med["plain"] * 1000, 1),
            "plain_same_options_write_ms": round(med["plain_same_options"] * 1000, 1),
            "lake_rows_per_s": round(rows / med["lake"]), "plain_rows_per_s": round(rows / med["plain"]),
            "write_rows": rows, "write_mb": round(mb, 1), "write_earlier_parts": earlier_parts}


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
    write_eps, write_repeats, report_eps, repeats = (32, 6, 2000, 3) if args.quick else (128, 10, 10000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"quick": args.quick}
        result.update(bench_write(write_eps, 100, write_repeats, 6, work))
        print(f"write {write_eps} episodes ({result['write_rows']:,} rows, {result['write_mb']} MB) into a partition already "
              f"holding {result['write_earlier_parts']}+ parts: write_episodes {result['lake_write_ms']} ms vs plain write_table "
              f"{result['plain_write_ms']} ms -> ratio {result['write_ratio']} ({result['write_ratio_same_options']} vs "
              f"write_table with the writer's Parquet options, {result['plain_same_options_write_ms']} ms)")
        result.update(bench_report(report_eps, 100, repeats, work))
        print(f"report over {result['report_lake_episodes']:,} episodes / {result['report_lake_steps']:,} steps: "
              f"{result['report_ms']} ms ({result['report_with_connect_ms']} ms with connect)")
        result["goals"] = {"write_ratio": ">= 0.8", "report_ms": "< 100"}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
