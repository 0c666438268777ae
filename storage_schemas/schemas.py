"""pyarrow schemas of every lake table (SPEC §4), each defined once with its schema version.

Partition columns (``source``, ``iteration``, ``suite`` for episodes/steps; ``iteration`` for
evaluations) live in the hive path, not in the files; readers (DuckDB, pyarrow.dataset) add them.
"""

from __future__ import annotations

import pyarrow as pa

from storage_schemas.keys import PARTITIONS, Table

SCHEMA_VERSION = 1

_META = {b"flywheel.schema_version": str(SCHEMA_VERSION).encode()}

EPISODES_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("task_id", pa.int32(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),  # expert | random | model | lerobot | hdf5 ...
        pa.field("policy_version", pa.string()),  # e.g. MLflow model URI / version; null for demos
        pa.field("planning", pa.bool_(), nullable=False),
        pa.field("seed", pa.int64()),
        pa.field("init_state_index", pa.int32()),
        pa.field("success", pa.bool_(), nullable=False),
        pa.field("terminal_reward", pa.float32(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("wall_time_s", pa.float32()),
        pa.field("gamma", pa.float32(), nullable=False),
        pa.field("action_dim", pa.int16(), nullable=False),
        pa.field("proprio_dim", pa.int16(), nullable=False),
        pa.field("cameras", pa.list_(pa.string()), nullable=False),
        pa.field("error", pa.string()),  # set when the episode raised; success is then false
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # How a model acted (`k16.s4` direct, `k16.s4.N4W1V2.j0.0` planning: actions executed per chunk, solver
        # steps, candidates / world-model / value samples, judging solver steps); null for demos and experts, and in
        # files written before the column existed.
        pa.field("inference", pa.string()),
    ],
    metadata=_META,
)

STEPS_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("t", pa.int32(), nullable=False),
        pa.field("proprio", pa.list_(pa.float32()), nullable=False),  # observation before the action
        pa.field("action", pa.list_(pa.float32()), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),  # sparse: 1 on the last step of a success
        pa.field("done", pa.bool_(), nullable=False),
        # Discounted Monte-Carlo return from t: gamma**(T-1-t) for a success, 0 for a failure (in [0, 1]).
        pa.field("value_target", pa.float32(), nullable=False),
        # PNG bytes per camera, only on steps whose cameras were rendered (null otherwise).
        pa.field("images", pa.map_(pa.string(), pa.binary())),
        pa.field("object_state", pa.list_(pa.float32())),  # privileged state when the simulator gives it
        # The expert's own (un-noised) action where the executed `action` was perturbed (perturbed-expert demos,
        # noisy-expert rollouts): the policy's label; null elsewhere. Files written before it read it as null.
        pa.field("expert_action", pa.list_(pa.float32())),
    ],
    metadata=_META,
)

EVALUATIONS_SCHEMA = pa.schema(
    [
        pa.field("evaluation_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("suite", pa.string(), nullable=False),
        pa.field("task_id", pa.int32(), nullable=False),
        pa.field("planning", pa.bool_(), nullable=False),
        pa.field("policy_version", pa.string(), nullable=False),
        pa.field("n_episodes", pa.int32(), nullable=False),
        pa.field("n_success", pa.int32(), nullable=False),
        pa.field("success_rate", pa.float64(), nullable=False),
        pa.field("ci_low", pa.float64(), nullable=False),
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("mean_length", pa.float64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("inference", pa.string()),  # the evaluated episodes' inference settings (see episodes)
    ],
    metadata=_META,
)

_SCHEMAS = {Table.EPISODES: EPISODES_SCHEMA, Table.STEPS: STEPS_SCHEMA, Table.EVALUATIONS: EVALUATIONS_SCHEMA}


def schema_for(table: Table | str) -> pa.Schema:
    """The file schema of ``table`` (partition columns excluded)."""
    return _SCHEMAS[Table(table)]


def partition_keys(table: Table | str) -> tuple[str, ...]:
    return PARTITIONS[Table(table)]


def validate_table(table: Table | str, data: pa.Table) -> pa.Table:
    """Check ``data`` against the table schema and return it cast to that exact schema.

    Raises:
        ValueError: naming missing/unexpected columns or a column that cannot be cast.
    """
    schema = schema_for(table)
    have, want = data.column_names, set(schema.names)
    have_set = set(have)
    missing = [n for n in schema.names if n not in have_set]
    extra = [n for n in have if n not in want]
    if missing or extra:
        raise ValueError(f"{Table(table)} rows do not match schema v{SCHEMA_VERSION}: missing={missing} unexpected={extra}")
    data = data.select(schema.names)
    for field in schema:
        if not field.nullable and data.column(field.name).null_count:
            raise ValueError(f"{Table(table)}.{field.name} must not contain nulls")
    try:
        return data.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{Table(table)} rows cannot be cast to schema v{SCHEMA_VERSION}: {exc}") from exc
