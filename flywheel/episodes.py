"""Lake → model inputs: episodes read back as :class:`cosmos_policy.samples.EpisodeArrays`, and their latents
cached once per tokenizer (:class:`cosmos_policy.latent_cache.LatentCache`).

This is the bridge between ``storage_schemas`` (which knows Parquet) and ``cosmos_policy`` (which knows arrays);
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from cosmos_policy.latent_cache import LatentCache
from cosmos_policy.latent_layout import LatentLayout
from cosmos_policy.samples import EpisodeArrays, EpisodeLatents
from cosmos_policy.tokenizer import Tokenizer
from storage_schemas.layout import LakeLayout
from storage_schemas.records import decode_png
from storage_schemas.views import connect

EPISODE_COLUMNS = "episode_id, source, iteration, suite, task_id, instruction, success, length, cameras"


class EpisodeReadError(ValueError):
    """An episode in the lake cannot be turned into model inputs (missing camera or steps)."""


def select_episodes(layout: LakeLayout, where: str = "true", limit: int | None = None) -> pa.Table:
    """Episode rows (``episode_id, source, iteration, suite, task_id, instruction, success, length, cameras``)
    matching a SQL predicate over the ``episodes`` view, ordered by id. Episodes that raised are excluded."""
    con = connect(layout)
    try:
        sql = (f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE error IS NULL AND ({where}) "
               f"ORDER BY episode_id" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _optional_column(steps: pa.Table, name: str) -> np.ndarray | None:
    """A nullable per-step vector column as ``(T, D)`` float32, or None unless every step has it."""
    values = steps.column(name).to_pylist()
    return None if any(v is None for v in values) else np.asarray(values, np.float32)


def _episode_from_steps(row: dict, steps: pa.Table, cameras: Sequence[str]) -> EpisodeArrays:
    t = steps.column("t").to_numpy()
    if len(t) != row["length"] or not np.array_equal(t, np.arange(len(t))):
        raise EpisodeReadError(f"episode {row['episode_id']}: steps table has {len(t)} rows for length "
                               f"{row['length']}")
    proprio = np.asarray(steps.column("proprio").to_pylist(), np.float32)
    actions = np.asarray(steps.column("action").to_pylist(), np.float32)
    object_state = _optional_column(steps, "object_state")
    image_steps, images = [], {c: [] for c in cameras}
    for step, entry in zip(t, steps.column("images").to_pylist(), strict=True):
        pngs = dict(entry or [])
        if not pngs:
            continue
        missing = [c for c in cameras if c not in pngs]
        if missing:
            raise EpisodeReadError(f"episode {row['episode_id']} step {step} lacks cameras {missing} "
                                   f"(has {sorted(pngs)})")
        image_steps.append(int(step))
        for c in cameras:
            images[c].append(decode_png(pngs[c]))
    if not image_steps:
        raise EpisodeReadError(f"episode {row['episode_id']} has no images")
    return EpisodeArrays(images={c: np.stack(v) for c, v in images.items()}, image_steps=np.asarray(image_steps),
                         proprio=proprio, actions=actions, success=bool(row["success"]),
                         instruction=row["instruction"], is_demo=row["source"] == "demo",
                         object_state=object_state, expert_actions=_optional_column(steps, "expert_action"))


def _steps_by_episode(con, ids: Sequence[str], columns: str) -> Iterator[tuple[str, pa.Table]]:
    """``(episode_id, its steps ordered by t)`` for each id, from one DuckDB query."""
    steps = con.sql(f"SELECT episode_id, t, {columns} FROM steps WHERE episode_id IN (SELECT unnest($1)) "
                    f"ORDER BY episode_id, t", params=[list(ids)]).to_arrow_table()
    id_col = steps.column("episode_id").to_numpy(zero_copy_only=False)
    for episode_id in ids:
        sel = np.flatnonzero(id_col == episode_id)
        if len(sel) == 0:
            raise EpisodeReadError(f"episode {episode_id} has no rows in the steps table")
        yield episode_id, steps.take(sel)


def read_episode_arrays(layout: LakeLayout, episodes: pa.Table, cameras: Sequence[str],
                        batch_size: int = 16) -> Iterator[tuple[str, EpisodeArrays]]:
    """``(episode_id, arrays)`` for each row of ``episodes`` (from :func:`select_episodes`), in order.

    Steps are read ``batch_size`` episodes per DuckDB query; images are decoded from PNG only for ``cameras``.
    """
    rows = episodes.to_pylist()
    con = connect(layout)
    try:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            parts = _steps_by_episode(con, [r["episode_id"] for r in chunk], "proprio, action, images, object_state, expert_action")
            for row, (episode_id, steps) in zip(chunk, parts, strict=True):
                yield episode_id, _episode_from_steps(row, steps, cameras)
    finally:
        con.close()


def read_episode_vectors(layout: LakeLayout, episode_ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """``episode_id -> {"proprio", "actions", "object_state", "expert_actions"}`` (the last two None when absent;
    no images) in one DuckDB query."""
    con = connect(layout)
    try:
        out = {}
        for episode_id, part in _steps_by_episode(con, episode_ids, "proprio, action, object_state, expert_action"):
            out[episode_id] = {"proprio": np.asarray(part.column("proprio").to_pylist(), np.float32),
                               "actions": np.asarray(part.column("action").to_pylist(), np.float32),
                               "object_state": _optional_column(part, "object_state"),
                               "expert_actions": _optional_column(part, "expert_action")}
        return out
    finally:
        con.close()


@dataclass
class CachedLatents:
    """Result of :func:`cache_latents`: the latents (in order) and how many were hits vs newly encoded."""

    episode_ids: list[str]
    latents: list[EpisodeLatents]
    hits: int
    misses: int
    fingerprint: str


def cache_latents(layout: LakeLayout, tokenizer: Tokenizer, cache_root: str | Path, cameras: Sequence[str],
                  where: str = "true", limit: int | None = None, progress: bool = True,
                  keep: bool = True, latent_layout: LatentLayout | None = None) -> CachedLatents:
    """Encode (once) and return the latents of every episode matching ``where``; cached ones are only read.

    Images are decoded and tokenized only for episodes missing from the cache or whose images changed. With
    ``keep=False`` the latents are only written (the result's ``latents`` stays empty): memory stays at one
    episode however large the selection. ``latent_layout`` (the model's) is needed by a contextual tokenizer,
    whose clips follow it (see :class:`~cosmos_policy.latent_cache.LatentCache`).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    episodes = select_episodes(layout, where, limit)
    cache = LatentCache(cache_root, tokenizer, layout=latent_layout)
    ids, out = [], []
    columns = (TextColumn("latents"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[hits]} cached"))
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("latents", total=episodes.num_rows, hits=0)
        for episode_id, arrays in read_episode_arrays(layout, episodes, cameras):
            encoded = cache.encode(episode_id, arrays, cameras)
            if keep:
                out.append(encoded)
            ids.append(episode_id)
            bar.update(task, advance=1, hits=cache.stats.hits)
    return CachedLatents(ids, out, cache.stats.hits, cache.stats.misses, cache.folder.name)
