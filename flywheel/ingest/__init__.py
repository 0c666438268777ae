"""Ingestion of demonstrations into the lake: LeRobot datasets and LIBERO/robomimic HDF5 files.

Every source is validated in full (paths, keys, shapes, dimensions against what the lake holds)
before the first row is written; episodes are then written in atomic chunks with deterministic,
content-derived ids, so an interrupted ingestion can simply be re-run and a repeated one changes
nothing. Normalisation statistics of every touched suite are recomputed at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from flywheel.ingest import hdf5, lerobot
from flywheel.ingest.common import IngestError, IngestOptions, IngestSummary
from storage_schemas import EpisodeData, LakeError, LakeWriter
from storage_schemas.stats import compute_suite_stats

Format = Literal["auto", "lerobot", "hdf5"]
HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")

__all__ = ["IngestError", "IngestOptions", "IngestSummary", "detect_format", "ingest", "write_episode_stream"]


def _hdf5_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in HDF5_SUFFIXES)


def detect_format(path: Path) -> Literal["lerobot", "hdf5"]:
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    if path.is_dir() and lerobot.is_lerobot_dataset(path):
        return "lerobot"
    if path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
        return "hdf5"
    if path.is_dir() and _hdf5_files(path):
        return "hdf5"
    raise IngestError(f"{path}: neither a LeRobot dataset (meta/info.json + data/) nor HDF5 file(s) "
                      f"({', '.join(HDF5_SUFFIXES)})")


def _check_lake_dims(writer: LakeWriter, expected: dict[str, tuple[int, int]], source: Path) -> None:
    held = writer.info()["suites"]
    for suite, (a, p) in expected.items():
        if suite in held and (held[suite]["action_dim"], held[suite]["proprio_dim"]) != (a, p):
            raise LakeError(f"{source}: suite {suite!r} episodes have action_dim={a}, proprio_dim={p} but the lake holds "
                            f"action_dim={held[suite]['action_dim']}, proprio_dim={held[suite]['proprio_dim']}")


def write_episode_stream(writer: LakeWriter, episodes: Iterable[EpisodeData], summary: IngestSummary,
                         chunk: int = 32, on_episode: Callable[[EpisodeData], None] | None = None) -> IngestSummary:
    """Write episodes in atomic chunks, recompute stats of touched suites and fill ``summary``."""
    buf: list[EpisodeData] = []
    cams: set[str] = set(summary.cameras)

    def flush() -> None:
        if buf:
            report = writer.write_episodes(buf)
            summary.replaced += report.replaced
            buf.clear()

    for ep in episodes:
        buf.append(ep)
        summary.episodes += 1
        summary.steps += ep.length
        summary.suites[ep.meta.suite] = summary.suites.get(ep.meta.suite, 0) + 1
        cams.update(ep.images)
        if on_episode:
            on_episode(ep)
        if len(buf) >= chunk:
            flush()
    flush()
    summary.cameras = sorted(cams)
    for suite in summary.suites:
        compute_suite_stats(writer.layout, suite)
    return summary


def ingest(path: str | Path, writer: LakeWriter, opts: IngestOptions | None = None, fmt: Format = "auto",
           on_episode: Callable[[EpisodeData], None] | None = None) -> IngestSummary:
    """Ingest a LeRobot dataset folder or HDF5 file(s) into the lake.

    Raises:
        IngestError: the source is missing, of an unknown kind, or malformed (nothing written).
        LakeError: dimensions differ from what the lake holds (nothing written).
    """
    opts = opts or IngestOptions()
    src = Path(path).expanduser()
    detected = detect_format(src)
    if fmt != "auto" and fmt != detected:
        raise IngestError(f"{src}: --format {fmt} given but the source looks like {detected}")
    summary = IngestSummary(source=str(src), format=detected)
    if detected == "lerobot":
        _check_lake_dims(writer, lerobot.expected_suites(src, opts), src)
        stream: Iterator[EpisodeData] = lerobot.read_episodes(src, opts)
    else:
        infos = [(f, hdf5.inspect_file(f, opts)) for f in _hdf5_files(src)]  # validate every file first
        expected: dict[str, tuple[int, int]] = {}
        for f, info in infos:
            dims = (info.action_dim, info.proprio_dim)
            if expected.setdefault(info.suite, dims) != dims:
                raise IngestError(f"{f}: suite {info.suite!r} has action_dim={dims[0]}, proprio_dim={dims[1]} but other "
                                  f"files give {expected[info.suite]}")
        _check_lake_dims(writer, expected, src)
        stream = (ep for f, info in infos for ep in hdf5.read_episodes(f, opts, info))
    return write_episode_stream(writer, stream, summary, chunk=opts.chunk_episodes, on_episode=on_episode)
