"""Normalisation statistics (per-dimension min/max/mean/std over demonstrations) and Wilson intervals."""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.dataset as ds

from storage_schemas.keys import Source, Table
from storage_schemas.layout import TMP_SUFFIX, LakeLayout


@dataclass(frozen=True)
class FeatureStats:
    min: list[float]
    max: list[float]
    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, x: np.ndarray) -> FeatureStats:
        x = np.asarray(x, dtype=np.float64)
        return cls(x.min(0).tolist(), x.max(0).tolist(), x.mean(0).tolist(), x.std(0).tolist())


@dataclass(frozen=True)
class SuiteStats:
    """Statistics of one suite's demonstrations, stored at ``meta/stats/<suite>.json``."""

    suite: str
    num_episodes: int
    num_steps: int
    action: FeatureStats
    proprio: FeatureStats
    # The privileged object state, when every demo step has one of the same length (else None).
    object_state: FeatureStats | None = None

    def to_json(self) -> str:
        d = asdict(self)
        if d["object_state"] is None:
            del d["object_state"]
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SuiteStats:
        d = json.loads(text)
        obj = d.get("object_state")
        return cls(d["suite"], d["num_episodes"], d["num_steps"], FeatureStats(**d["action"]), FeatureStats(**d["proprio"]),
                   FeatureStats(**obj) if obj is not None else None)


def _stack(column) -> np.ndarray:
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    values = flat.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(flat), -1)


def _object_state_stats(column) -> FeatureStats | None:
    """Statistics of the object-state column when every row has one and all have the same length."""
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if flat.null_count or len(flat) == 0:
        return None
    lengths = flat.value_lengths().to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max() or lengths[0] == 0:
        return None
    return FeatureStats.of(_stack(flat))


def compute_suite_stats(layout: LakeLayout, suite: str) -> SuiteStats:
    """Compute statistics over every demo step of ``suite`` in the lake and store them.

    Raises:
        ValueError: when the lake holds no demonstrations of ``suite``.
    """
    steps_dir = layout.table_dir(Table.STEPS)
    if not steps_dir.exists():
        raise ValueError(f"the lake has no steps yet (looked in {steps_dir})")
    dataset = ds.dataset(steps_dir, format="parquet", partitioning="hive", exclude_invalid_files=True)
    flt = (ds.field("source") == str(Source.DEMO)) & (ds.field("suite") == suite)
    table = dataset.to_table(columns=["episode_id", "proprio", "action", "object_state"], filter=flt)
    if table.num_rows == 0:
        raise ValueError(f"no demonstrations of suite {suite!r} in the lake")
    stats = SuiteStats(
        suite=suite,
        num_episodes=len(set(table.column("episode_id").to_pylist())),
        num_steps=table.num_rows,
        action=FeatureStats.of(_stack(table.column("action"))),
        proprio=FeatureStats.of(_stack(table.column("proprio"))),
        object_state=_object_state_stats(table.column("object_state")),
    )
    path = layout.stats_path(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    tmp.write_text(stats.to_json())
    os.replace(tmp, path)
    return stats


def load_suite_stats(layout: LakeLayout, suite: str) -> SuiteStats:
    path = layout.stats_path(suite)
    if not path.exists():
        raise FileNotFoundError(f"no normalisation statistics for suite {suite!r} ({path}); ingest demos first")
    return SuiteStats.from_json(path.read_text())


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamped to contain p: at k = 0 or k = n, center - half (or + half) equals p only up to rounding.
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


def mcnemar_exact(wins: int, losses: int) -> float:
    """One-sided exact McNemar test on paired binary outcomes: P(X >= wins) for X ~ Binomial(wins + losses, 1/2),
    where ``wins`` are pairs only A solved and ``losses`` pairs only B solved (ties carry no information). 1.0 when
    there are no discordant pairs."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins}, {losses}")
    n = wins + losses
    return min(1.0, sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n) if n else 1.0
