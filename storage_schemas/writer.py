"""Atomic, idempotent writes to the lake.

Every write lands in a partition as one *part*: an ``episodes`` file plus the ``steps`` file of the
same name (or one ``evaluations`` file). Rows whose id already exists in another part of the same
partition are removed from that part in the same commit, so re-writing an id replaces it.

Commit protocol (crash-safe): all new files are written under temporary names, then a journal listing
the renames/deletions is written, then the operations run, then the journal is removed. A crash
before the journal leaves only temporary files (swept later); a crash after it is rolled forward by
the next writer (or ``LakeWriter.recover()``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_schemas.keys import Table
from storage_schemas.layout import PARQUET_SUFFIX, PART_PREFIX, TMP_SUFFIX, LakeLayout
from storage_schemas.records import EpisodeData, episodes_to_tables
from storage_schemas.schemas import SCHEMA_VERSION, partition_keys, validate_table

_ID_COLUMN = {Table.EPISODES: "episode_id", Table.EVALUATIONS: "evaluation_id"}
_COMPANIONS = {Table.EPISODES: (Table.STEPS,), Table.EVALUATIONS: ()}


class LakeError(ValueError):
    """Raised for input the lake refuses (schema or dimension mismatch); nothing is written."""


@dataclass
class WriteReport:
    rows: dict[str, int] = field(default_factory=dict)
    replaced: int = 0  # ids that existed before and were replaced
    parts: list[str] = field(default_factory=list)

    def merge(self, other: WriteReport) -> None:
        for k, v in other.rows.items():
            self.rows[k] = self.rows.get(k, 0) + v
        self.replaced += other.replaced
        self.parts += other.parts


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class LakeWriter:
    """Writes episodes, steps and evaluations into a lake folder.

    Args:
        layout: the lake's :class:`LakeLayout` (or a root path).
        compression: Parquet codec, defaults to ``"snappy"`` (what pyarrow uses by default).
    """

    def __init__(self, layout: LakeLayout | str | Path, compression: str = "snappy") -> None:
        self.layout = layout if isinstance(layout, LakeLayout) else LakeLayout(Path(layout))
        self.compression = compression
        self._id_cache: dict[Path, tuple[int, int, frozenset[str]]] = {}
        self.init()

    # ------------------------------------------------------------------ set-up / metadata
    def init(self) -> None:
        """Create the lake folder and ``meta/info.json``; roll forward unfinished commits."""
        self.layout.meta_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.layout.lock_path("info")):
            if not self.layout.info_path.exists():
                self._write_info({"schema_version": SCHEMA_VERSION, "suites": {}})
            info = self.info()
            if info.get("schema_version") != SCHEMA_VERSION:
                raise LakeError(f"lake at {self.layout.root} has schema v{info.get('schema_version')}, "
                                f"this code writes v{SCHEMA_VERSION}; migrate or use a new FLYWHEEL_HOME")
        self.recover()

    def info(self) -> dict:
        return json.loads(self.layout.info_path.read_text())

    def _write_info(self, info: dict) -> None:
        tmp = self.layout.info_path.with_suffix(f".{uuid.uuid4().hex}{TMP_SUFFIX}")
        _fsync_write(tmp, json.dumps(info, indent=2, sort_keys=True).encode())
        os.replace(tmp, self.layout.info_path)

    def register_dims(self, suite: str, action_dim: int, proprio_dim: int) -> None:
        """Record (or check) the action/proprio dimensions the lake holds for ``suite``.

        Raises:
            LakeError: when they differ from what the lake already holds.
        """
        with _locked(self.layout.lock_path("info")):
            info = self.info()
            known = info["suites"].get(suite)
            if known is None:
                info["suites"][suite] = {"action_dim": int(action_dim), "proprio_dim": int(proprio_dim)}
                self._write_info(info)
            elif (known["action_dim"], known["proprio_dim"]) != (action_dim, proprio_dim):
                raise LakeError(
                    f"suite {suite!r}: episode has action_dim={action_dim}, proprio_dim={proprio_dim} but the lake "
                    f"holds action_dim={known['action_dim']}, proprio_dim={known['proprio_dim']}"
                )

    def check_dims(self, episodes: Sequence[EpisodeData]) -> None:
        """Validate every episode's dimensions against the lake (and each other) before writing anything."""
        info = self.info()["suites"]
        seen: dict[str, tuple[int, int]] = {s: (d["action_dim"], d["proprio_dim"]) for s, d in info.items()}
        for ep in episodes:
            dims = (ep.action_dim, ep.proprio_dim)
            expected = seen.setdefault(ep.meta.suite, dims)
            if expected != dims:
                raise LakeError(
                    f"episode {ep.meta.episode_id} (suite {ep.meta.suite!r}) has action_dim={dims[0]}, proprio_dim={dims[1]} "
                    f"but the lake holds action_dim={expected[0]}, proprio_dim={expected[1]}"
                )

    # ------------------------------------------------------------------ writes
    def write_episodes(self, episodes: Sequence[EpisodeData]) -> WriteReport:
        """Write episodes and their steps; ids already in the lake are replaced. All-or-nothing per partition."""
        if not episodes:
            return WriteReport()
        ids = [e.meta.episode_id for e in episodes]
        if len(set(ids)) != len(ids):
            raise LakeError("duplicate episode ids in one write")
        self.check_dims(episodes)
        for ep in episodes:
            self.register_dims(ep.meta.suite, ep.action_dim, ep.proprio_dim)
        ep_table, steps_table = episodes_to_tables(episodes)
        return self.write_tables(Table.EPISODES, {Table.EPISODES: ep_table, Table.STEPS: steps_table})

    def write_evaluations(self, table: pa.Table) -> WriteReport:
        """Write ``evaluations`` rows (with an ``iteration`` column); ids already present are replaced."""
        return self.write_tables(Table.EVALUATIONS, {Table.EVALUATIONS: table})

    def write_tables(self, primary: Table, tables: dict[Table, pa.Table]) -> WriteReport:
        """Route rows (which carry their partition columns) to partitions and commit each partition."""
        keys = partition_keys(primary)
        report = WriteReport()
        main = tables[primary]
        groups = main.group_by(list(keys)).aggregate([]).to_pylist()
        for values in groups:
            parts: dict[Table, pa.Table] = {}
            for table_name, data in tables.items():
                mask = None
                for k in keys:
                    cond = pc.equal(data[k], pa.scalar(values[k], data.schema.field(k).type))
                    mask = cond if mask is None else pc.and_(mask, cond)
                parts[table_name] = validate_table(table_name, data.filter(mask).drop_columns(list(keys)))
            report.merge(self._commit_partition(primary, values, parts))
        return report

    def _existing_ids(self, path: Path, id_col: str) -> frozenset[str]:
        st = path.stat()
        cached = self._id_cache.get(path)
        if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
            return cached[2]
        ids = frozenset(pq.read_table(path, columns=[id_col]).column(0).to_pylist())
        self._id_cache[path] = (st.st_mtime_ns, st.st_size, ids)
        return ids

    def _commit_partition(self, primary: Table, values: dict, parts: dict[Table, pa.Table]) -> WriteReport:
        id_col = _ID_COLUMN[primary]
        tables = (primary, *_COMPANIONS[primary])
        new_ids = set(parts[primary].column(id_col).to_pylist())
        part_name = PART_PREFIX + hashlib.sha1("\n".join(sorted(new_ids)).encode()).hexdigest()[:20] + PARQUET_SUFFIX
        dirs = {t: self.layout.partition_dir(t, values) for t in tables}
        lock = self.layout.lock_path(str(dirs[primary].relative_to(self.layout.root)))
        ops: list[tuple[str, str | None]] = []  # (tmp -> final) renames, or (path, None) deletions
        replaced = 0
        with _locked(lock):
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            for t in tables:  # 1. the new part, under temporary names
                ops.append(self._write_tmp(parts[t], dirs[t] / part_name))
            for old in sorted(dirs[primary].glob(f"*{PARQUET_SUFFIX}")):  # 2. old parts holding the same ids
                if old.name == part_name:
                    replaced += len(new_ids & self._existing_ids(old, id_col))
                    continue
                clash = new_ids & self._existing_ids(old, id_col)
                if not clash:
                    continue
                replaced += len(clash)
                keep_ids = pa.array(sorted(clash), pa.string())
                for t in tables:
                    path = dirs[t] / old.name
                    if not path.exists():
                        continue
                    data = pq.read_table(path)
                    col = id_col if t == primary else "episode_id"
                    kept = data.filter(pc.invert(pc.is_in(data[col], value_set=keep_ids)))
                    ops.append(self._write_tmp(kept, path) if kept.num_rows else (str(path), None))
            self._apply(ops)
        return WriteReport(rows={str(t): parts[t].num_rows for t in tables}, replaced=replaced,
                           parts=[str(dirs[primary] / part_name)])

    def _write_tmp(self, data: pa.Table, final: Path) -> tuple[str, str]:
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        pq.write_table(data, tmp, compression=self.compression)
        return str(tmp), str(final)

    def _apply(self, ops: list[tuple[str, str | None]]) -> None:
        """Journal, then run the renames/deletions, then drop the journal."""
        self.layout.journal_dir.mkdir(parents=True, exist_ok=True)
        journal = self.layout.journal_dir / f"{uuid.uuid4().hex}.json"
        tmp = journal.with_suffix(TMP_SUFFIX)
        _fsync_write(tmp, json.dumps(ops).encode())
        os.replace(tmp, journal)
        _run_ops(ops)
        journal.unlink()

    def recover(self) -> int:
        """Roll forward commits interrupted after their journal was written; returns how many."""
        done = 0
        for journal in sorted(self.layout.journal_dir.glob("*.json")) if self.layout.journal_dir.exists() else []:
            with _locked(self.layout.lock_path("journal-" + journal.name)):
                if not journal.exists():
                    continue
                _run_ops(json.loads(journal.read_text()))
                journal.unlink()
                done += 1
        return done

    # ------------------------------------------------------------------ maintenance
    def compact(self, table: Table = Table.EPISODES) -> int:
        """Merge every partition's parts into one part (fewer files, faster queries). Returns partitions merged."""
        merged = 0
        id_col = _ID_COLUMN[table]
        tables = (table, *_COMPANIONS[table])
        for pdir in sorted({p.parent for p in self.layout.parts(table)}):
            olds = sorted(pdir.glob(f"*{PARQUET_SUFFIX}"))
            if len(olds) < 2:
                continue
            rel = pdir.relative_to(self.layout.table_dir(table))
            with _locked(self.layout.lock_path(str(pdir.relative_to(self.layout.root)))):
                olds = sorted(pdir.glob(f"*{PARQUET_SUFFIX}"))
                data = pa.concat_tables([pq.read_table(p) for p in olds])
                ids = data.column(id_col).to_pylist()
                name = PART_PREFIX + hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:20] + PARQUET_SUFFIX
                ops: list[tuple[str, str | None]] = []
                for t in tables:
                    tdir = self.layout.table_dir(t) / rel
                    files = [tdir / p.name for p in olds if (tdir / p.name).exists()]
                    if t != table:
                        data_t = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
                    else:
                        data_t = data
                    if data_t is not None:
                        ops.append(self._write_tmp(data_t, tdir / name))
                    ops += [(str(f), None) for f in files if f.name != name]
                self._apply(ops)
            merged += 1
        return merged


def _run_ops(ops: list) -> None:
    for src, dst in ops:
        if dst is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)
        elif os.path.exists(src):
            os.replace(src, dst)
