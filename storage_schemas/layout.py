"""Where every file of the lake lives (see the package docstring for the tree)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from storage_schemas.keys import Table
from storage_schemas.schemas import partition_keys

PART_PREFIX = "part-"
PARQUET_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"  # temporary files never end in .parquet, so no reader globs them


@dataclass(frozen=True)
class LakeLayout:
    """Paths of a lake rooted at ``root`` (a local folder; DuckDB can also read a remote copy)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    def table_dir(self, table: Table | str) -> Path:
        return self.root / str(Table(table))

    def partition_dir(self, table: Table | str, values: Mapping[str, object]) -> Path:
        keys = partition_keys(table)
        missing = [k for k in keys if k not in values]
        if missing:
            raise ValueError(f"partition of {table} needs {missing}")
        path = self.table_dir(table)
        for key in keys:
            value = str(values[key])
            if not value or "/" in value or "=" in value:
                raise ValueError(f"invalid partition value {key}={value!r}")
            path = path / f"{key}={value}"
        return path

    def glob(self, table: Table | str) -> str:
        """Glob DuckDB reads ``table`` with (hive partitioning)."""
        depth = "/".join("*" for _ in partition_keys(table))
        return str(self.table_dir(table) / depth / f"*{PARQUET_SUFFIX}")

    def parts(self, table: Table | str) -> list[Path]:
        return sorted(self.table_dir(table).glob(f"**/*{PARQUET_SUFFIX}"))

    @property
    def meta_dir(self) -> Path:
        return self.root / "meta"

    @property
    def info_path(self) -> Path:
        return self.meta_dir / "info.json"

    def stats_path(self, suite: str) -> Path:
        return self.meta_dir / "stats" / f"{suite}.json"

    @property
    def journal_dir(self) -> Path:
        return self.meta_dir / "journal"

    def lock_path(self, name: str) -> Path:
        return self.meta_dir / "locks" / f"{hashlib.sha1(name.encode()).hexdigest()[:16]}.lock"

    def is_initialised(self) -> bool:
        return self.info_path.exists()
