"""DuckDB views over the lake (``episodes``, ``steps``, ``evaluations``) and the canned reports."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from storage_schemas.keys import Table
from storage_schemas.layout import LakeLayout
from storage_schemas.schemas import partition_keys, schema_for

_PARTITION_TYPES = {"source": pa.string(), "iteration": pa.int32(), "suite": pa.string()}
_DUCK_TYPES = {"source": "VARCHAR", "iteration": "INTEGER", "suite": "VARCHAR"}

Z95 = 1.959963984540054


def _empty(table: Table) -> pa.Table:
    schema = schema_for(table)
    for key in partition_keys(table):
        schema = schema.append(pa.field(key, _PARTITION_TYPES[key]))
    return schema.empty_table()


def connect(layout: LakeLayout, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with read-only views ``episodes``, ``steps`` and ``evaluations`` over the lake."""
    con = duckdb.connect(database)
    for table in Table:
        name = str(table)
        if layout.parts(table):
            types = ", ".join(f"'{k}': {_DUCK_TYPES[k]}" for k in partition_keys(table))
            source = (f"read_parquet('{layout.glob(table)}', hive_partitioning = true, union_by_name = true, "
                      f"hive_types = {{{types}}})")
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
            added = _missing_columns(con, name, table)
            if added:  # files written before a nullable column existed: it reads as null
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *, {added} FROM {source}")
        else:  # no files yet: an empty relation with the right columns, so queries still bind
            con.register(f"_{name}_empty", _empty(table))
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _{name}_empty")
    return con


def _missing_columns(con: duckdb.DuckDBPyConnection, view: str, table: Table) -> str:
    """``NULL::<type> AS <column>`` for every schema column the view's files lack ("" when none)."""
    have = {row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()}
    empty = _empty(table)
    missing = [f.name for f in empty.schema if f.name not in have]
    if not missing:
        return ""
    con.register("_schema_probe", empty.select(missing))
    duck = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE _schema_probe)").fetchall())
    con.unregister("_schema_probe")
    return ", ".join(f"NULL::{duck[c]} AS {c}" for c in missing)


def _wilson_sql(s: str, n: str) -> tuple[str, str]:
    p = f"({s}::DOUBLE / {n})"
    z2 = Z95 * Z95
    center = f"(({p} + {z2} / (2 * {n})) / (1 + {z2} / {n}))"
    half = f"({Z95} * sqrt({p} * (1 - {p}) / {n} + {z2} / (4 * {n} * {n})) / (1 + {z2} / {n}))"
    return f"greatest(0, {center} - {half})", f"least(1, {center} + {half})"


_LO, _HI = _wilson_sql("n_success", "n")

# One row per system: the behaviour (expert, model, ...), the model version (with its planner), planning on/off and
# the inference settings; two models evaluated in one iteration are never pooled.
SUCCESS_BY_TASK = f"""
SELECT source, suite, task_id, iteration, policy, policy_version, planning, inference, n, n_success,
       round(n_success::DOUBLE / n, 4) AS success_rate,
       round({_LO}, 4) AS ci95_low, round({_HI}, 4) AS ci95_high
FROM (SELECT source, suite, task_id, iteration, policy, policy_version, planning, inference, count(*)::BIGINT AS n,
             count_if(success)::BIGINT AS n_success
      FROM episodes GROUP BY ALL)
ORDER BY source, suite, task_id, iteration, policy, policy_version NULLS FIRST, planning, inference NULLS FIRST
"""

LENGTH_BY_OUTCOME = """
SELECT source, suite, success, count(*) AS episodes,
       round(avg(length), 1) AS mean_length, median(length) AS median_length,
       min(length) AS min_length, max(length) AS max_length
FROM episodes GROUP BY ALL ORDER BY source, suite, success DESC
"""


@dataclass(frozen=True)
class Report:
    title: str
    sql: str


REPORTS: tuple[Report, ...] = (
    Report("Success rate by suite x task x iteration x system (policy, version, planning, inference settings; Wilson 95% CI)", SUCCESS_BY_TASK),
    Report("Episode length: successes vs failures", LENGTH_BY_OUTCOME),
)


def run_reports(con: duckdb.DuckDBPyConnection) -> list[tuple[Report, pa.Table]]:
    """Run every canned report; returns (report, Arrow result) pairs."""
    return [(r, con.sql(r.sql).to_arrow_table()) for r in REPORTS]
