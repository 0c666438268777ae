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

import bisect
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
        compression: Parquet codec, defaults to ``"snappy"`` (what pyarrow uses by default). Binary columns (the
            PNG images, already deflate-compressed) are stored as they are: recompressing them costs time
            and saves under 1%.

    Files are written with dictionary encoding for every column except the per-step vectors and the images:
    those are (almost) all distinct, so building a dictionary only to drop it costs about half the
    write time and makes the float columns larger.
    """

    def __init__(self, layout: LakeLayout | str | Path, compression: str = "snappy") -> None:
        self.layout = layout if isinstance(layout, LakeLayout) else LakeLayout(Path(layout))
        self.compression = compression
        # part path -> ((mtime_ns, size, inode) it had, its ids); a rewritten part has a new inode and mtime
        self._id_cache: dict[Path, tuple[tuple[int, int, int], frozenset[str]]] = {}
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

    def check_dims(self, episodes: Sequence[EpisodeData]) -> dict[str, tuple[int, int]]:
        """Validate every episode's dimensions against the lake (and each other) before writing anything.

        Returns:
            ``suite -> (action_dim, proprio_dim)`` of the suites the lake does not hold yet.
        """
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
        return {s: dims for s, dims in seen.items() if s not in info}

    # ------------------------------------------------------------------ writes
    def write_episodes(self, episodes: Sequence[EpisodeData]) -> WriteReport:
        """Write episodes and their steps; ids already in the lake are replaced. All-or-nothing per partition."""
        if not episodes:
            return WriteReport()
        ids = [e.meta.episode_id for e in episodes]
        if len(set(ids)) != len(ids):
            raise LakeError("duplicate episode ids in one write")
        # Registered dims never change, so only suites new to the lake need the (locked) registration; it
        # re-checks under the lock, in case another writer registered the suite since check_dims read it.
        for suite, (action_dim, proprio_dim) in self.check_dims(episodes).items():
            self.register_dims(suite, action_dim, proprio_dim)
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
            parts = {t: validate_table(t, _partition_rows(data, keys, values).drop_columns(list(keys)))
                     for t, data in tables.items()}
            report.merge(self._commit_partition(primary, values, parts))
        return report

    def _clashes(self, path: Path, id_col: str, new_ids: set[str], sorted_new: list[str]) -> set[str]:
        """The ids of ``new_ids`` that the part at ``path`` holds (call under the partition lock).

        Reads the part's id column only when its footer statistics (min/max id per row group) leave a new
        id possible; what it reads is cached by the part's (mtime, size, inode).
        """
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._id_cache.get(path)
        if cached and cached[0] == key:
            return new_ids & cached[1]
        with open(path, "rb") as fh:  # a file object spares pyarrow's filesystem resolution (half the cost)
            pf = pq.ParquetFile(fh)
            if not _may_hold(pf.metadata, id_col, sorted_new):
                return set()
            ids = frozenset(pf.read(columns=[id_col], use_threads=False).column(0).to_pylist())
        self._id_cache[path] = (key, ids)
        return new_ids & ids

    def _commit_partition(self, primary: Table, values: dict, parts: dict[Table, pa.Table]) -> WriteReport:
        id_col = _ID_COLUMN[primary]
        tables = (primary, *_COMPANIONS[primary])
        new_ids = set(parts[primary].column(id_col).to_pylist())
        sorted_new = sorted(new_ids)
        part_name = PART_PREFIX + hashlib.sha1("\n".join(sorted_new).encode()).hexdigest()[:20] + PARQUET_SUFFIX
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
                clash = self._clashes(old, id_col, new_ids, sorted_new)
                if old.name == part_name:
                    replaced += len(clash)
                    continue
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
                self._id_cache.pop(old, None)
            self._apply(ops)
            tmp, final = ops[0]  # the new primary part; still under the lock, so it is the file just renamed
            if not os.path.exists(tmp) and final is not None and os.path.exists(final):
                st = os.stat(final)
                self._id_cache[Path(final)] = ((st.st_mtime_ns, st.st_size, st.st_ino), frozenset(new_ids))
        return WriteReport(rows={str(t): parts[t].num_rows for t in tables}, replaced=replaced,
                           parts=[str(dirs[primary] / part_name)])

    def _write_tmp(self, data: pa.Table, final: Path) -> tuple[str, str]:
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        dictionary, compression = _column_options(data.schema, self.compression)
        pq.write_table(data, tmp, compression=compression, use_dictionary=dictionary)
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
                data = _concat([pq.read_table(p) for p in olds])
                ids = data.column(id_col).to_pylist()
                name = PART_PREFIX + hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:20] + PARQUET_SUFFIX
                ops: list[tuple[str, str | None]] = []
                for t in tables:
                    tdir = self.layout.table_dir(t) / rel
                    files = [tdir / p.name for p in olds if (tdir / p.name).exists()]
                    if t != table:
                        data_t = _concat([pq.read_table(f) for f in files]) if files else None
                    else:
                        data_t = data
                    if data_t is not None:
                        ops.append(self._write_tmp(data_t, tdir / name))
                    ops += [(str(f), None) for f in files if f.name != name]
                self._apply(ops)
            merged += 1
        return merged


def _concat(parts: list[pa.Table]) -> pa.Table:
    """Concatenate parts, filling nullable columns that older files lack with nulls."""
    return pa.concat_tables(parts, promote_options="default")


def _leaves(field: pa.Field) -> list[tuple[str, pa.DataType]]:
    """``(Parquet column path, Arrow type)`` of the leaf columns one field is stored as."""
    t = field.type
    if pa.types.is_map(t):
        return [(f"{field.name}.key_value.key", t.key_type), (f"{field.name}.key_value.value", t.item_type)]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [(f"{field.name}.list.element", t.value_type)]
    return [(field.name, t)]


def _column_options(schema: pa.Schema, codec: str) -> tuple[list[str], dict[str, str]]:
    """Per-leaf Parquet settings: the columns to dictionary-encode, and each column's codec."""
    dictionary, compression = [], {}
    for f in schema:
        vectors = pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)
        for path, leaf in _leaves(f):
            binary = pa.types.is_binary(leaf) or pa.types.is_large_binary(leaf)
            if not (vectors or binary):
                dictionary.append(path)
            compression[path] = "none" if binary else codec
    return dictionary, compression


def _partition_rows(data: pa.Table, keys: Sequence[str], values: dict) -> pa.Table:
    """The rows of ``data`` in the partition ``values``: ``data`` itself (no copy) when every row is in it."""
    def only(k: str) -> bool:
        col = data[k]
        if col.null_count:
            return False
        mm = pc.min_max(col)
        return mm["min"].as_py() == values[k] and mm["max"].as_py() == values[k]

    if data.num_rows and all(only(k) for k in keys):
        return data
    mask = None
    for k in keys:
        cond = pc.equal(data[k], pa.scalar(values[k], data.schema.field(k).type))
        mask = cond if mask is None else pc.and_(mask, cond)
    return data.filter(mask)


def _may_hold(metadata: pq.FileMetaData, id_col: str, sorted_ids: list[str]) -> bool:
    """False when the footer's min/max of ``id_col`` proves no id of ``sorted_ids`` is in the file."""
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if id_col not in names:
        return True
    col = names.index(id_col)
    for r in range(metadata.num_row_groups):
        stats = metadata.row_group(r).column(col).statistics
        if stats is None or not stats.has_min_max or not isinstance(stats.min, str) or not isinstance(stats.max, str):
            return True  # nothing to rule it out with
        i = bisect.bisect_left(sorted_ids, stats.min)
        if i < len(sorted_ids) and sorted_ids[i] <= stats.max:
            return True
    return False


def _run_ops(ops: list) -> None:
    for src, dst in ops:
        if dst is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)
        elif os.path.exists(src):
            os.replace(src, dst)
