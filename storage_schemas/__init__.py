"""Parquet lake: table schemas, layout, atomic idempotent writes and DuckDB views.

The lake is a folder (``$FLYWHEEL_HOME/lake`` by default) of hive-partitioned Parquet files::

    lake/
      episodes/source=demo/iteration=0/suite=libero_object/part-<hash>.parquet
      steps/source=demo/iteration=0/suite=libero_object/part-<hash>.parquet      (same part names)
      evaluations/iteration=3/part-<hash>.parquet
      meta/info.json                 schema version, per-suite action/proprio dims
      meta/stats/<suite>.json        min/max/mean/std per dimension over demos (normalisation)
      meta/locks/                    advisory write locks (one per partition)

A *part* is one ``episodes`` file and the ``steps`` file of the same name, holding the same episode
ids. Episode ids are deterministic (content hash for ingested demos, (iteration, suite, task, init
index, seed) for rollouts) and always land in the same partition, so re-writing an id replaces the
old rows instead of duplicating them. Every file is written to a temporary name and renamed.

This package knows nothing about torch, simulators, Prefect, Ray or MLflow.
"""

from storage_schemas.keys import Source, Table
from storage_schemas.layout import LakeLayout
from storage_schemas.records import EpisodeData, EpisodeMeta, episodes_to_tables, rollout_episode_id
from storage_schemas.schemas import (
    EPISODES_SCHEMA,
    EVALUATIONS_SCHEMA,
    SCHEMA_VERSION,
    STEPS_SCHEMA,
    schema_for,
)
from storage_schemas.writer import LakeError, LakeWriter

__all__ = [
    "EPISODES_SCHEMA",
    "EVALUATIONS_SCHEMA",
    "SCHEMA_VERSION",
    "STEPS_SCHEMA",
    "EpisodeData",
    "EpisodeMeta",
    "LakeError",
    "LakeLayout",
    "LakeWriter",
    "Source",
    "Table",
    "episodes_to_tables",
    "rollout_episode_id",
    "schema_for",
]
