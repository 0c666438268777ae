"""Training data: lake selection → latent cache → Ray Data streams of samples → mixed batches on each worker.

Driver side (:func:`select_training_episodes`, :func:`build_datasets`): pick the episodes of a training run from
the lake (demos for base fine-tuning; demos + rollouts for refinement; ``source='eval'`` never), and describe them
as Ray datasets whose read tasks are pinned to the driver's node. That node is the one that sees the lake and the
latent cache, so training workers on other nodes receive samples through Ray's object store, never through a
path they are assumed to share. No process holds the whole selection: readers turn a few episodes at a time into
sample rows (:func:`cosmos_policy.samples.sample_rows`).

Worker side (:class:`SampleStream`, :class:`BatchMixer`): each worker reads its shard of every stream and composes
batches with the run's (policy, world_model, value) fractions. A stream's position (epoch, batches taken) is saved
in every checkpoint, so a resumed run continues the data order instead of restarting it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cosmos_policy.configuration_cosmos_policy import MixName
from cosmos_policy.latent_cache import read_entry
from cosmos_policy.latent_layout import LatentLayout
from cosmos_policy.samples import EpisodeLatents, concat_rows, mix_counts, sample_rows
from flywheel.episodes import EPISODE_COLUMNS, read_episode_vectors
from flywheel.model_setup import ModelSetupError
from storage_schemas.layout import LakeLayout
from storage_schemas.views import connect


@dataclass
class TrainingSelection:
    """The episodes one training run uses, and what identifies them."""

    suite: str
    mix: MixName
    episodes: pa.Table  # EPISODE_COLUMNS rows, ordered by episode_id
    digest: str  # sha256 over the episode ids used (first 16 hex)
    counts: dict[str, int] = field(default_factory=dict)  # demo / rollout / rollout_success / rollout_failure

    @property
    def episode_ids(self) -> list[str]:
        return self.episodes.column("episode_id").to_pylist()

    def stream_names(self, balance_outcomes: bool) -> list[str]:
        """``demo`` always; for refinement ``success`` + ``failure`` (balanced) or ``rollout``."""
        if self.mix == "base":
            return ["demo"]
        if not balance_outcomes:
            return ["demo", "rollout"]
        return ["demo"] + [n for n in ("success", "failure") if self.counts[f"rollout_{n}"]]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def select_training_episodes(lake: LakeLayout, suite: str, mix: MixName, where: str | None = None,
                             rollout_iterations: tuple[int, int] | None = None) -> TrainingSelection:
    """Episodes of ``suite`` for a ``base`` (demos) or ``refine`` (demos + rollouts) run.

    Args:
        lake: the lake.
        suite: e.g. ``libero_object``.
        mix: ``base`` or ``refine``.
        where: extra SQL predicate over the ``episodes`` view.
        rollout_iterations: inclusive (first, last) iteration window of rollouts (refinement); None = all.

    Raises:
        ModelSetupError: no demos of the suite, an empty selection, or (refine) no rollouts.
    """
    if not (lake.root / "episodes").exists():
        raise ModelSetupError(f"the lake at {lake.root} holds no episodes: add demonstrations first "
                              f"(flywheel demos generate --suite {suite}, or flywheel ingest)")
    sources = "('demo')" if mix == "base" else "('demo', 'rollout')"
    pred = f"suite = {_quote(suite)} AND source IN {sources} AND error IS NULL"
    if rollout_iterations is not None:
        lo, hi = rollout_iterations
        pred += f" AND (source = 'demo' OR iteration BETWEEN {int(lo)} AND {int(hi)})"
    con = connect(lake)
    try:
        n_demos = con.sql(f"SELECT count(*) FROM episodes WHERE suite = {_quote(suite)} AND source = 'demo' "
                          f"AND error IS NULL").fetchall()[0][0]
        if not n_demos:
            raise ModelSetupError(f"no demonstrations of suite {suite!r} in the lake at {lake.root}: run "
                                  f"`flywheel demos generate --suite {suite}` or `flywheel ingest` first")
        table = con.sql(f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE {pred} AND ({where or 'true'}) "
                        f"ORDER BY episode_id").to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise ModelSetupError(f"the selection is empty: no {mix} training episodes of {suite!r} match "
                              f"{where or 'the defaults'}")
    src = np.asarray(table.column("source").to_pylist())
    ok = np.asarray(table.column("success").to_pylist(), dtype=bool)
    counts = {"demo": int((src == "demo").sum()), "rollout": int((src == "rollout").sum()),
              "rollout_success": int(((src == "rollout") & ok).sum()),
              "rollout_failure": int(((src == "rollout") & ~ok).sum())}
    if counts["demo"] == 0:
        raise ModelSetupError(f"the selection has no demonstrations of {suite!r} (policy samples need them)")
    if mix == "refine" and counts["rollout"] == 0:
        raise ModelSetupError(f"refinement needs rollouts of {suite!r} in the lake; none match (run "
                              f"`flywheel rollout --suite {suite}` or the collect flow first)")
    ids = table.column("episode_id").to_pylist()
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return TrainingSelection(suite, mix, table, digest, counts)


def read_samples(batch: Mapping[str, np.ndarray], lake_root: str, cache_folder: str, layout: dict[str, Any],
                 gamma: float) -> dict[str, np.ndarray]:
    """Episode descriptors (columns ``episode_id, success, is_demo, instruction, length``) → sample rows, read
    from the lake (proprio, actions) and the latent cache (images)."""
    lay = LatentLayout.from_dict(layout)
    ids = [str(x) for x in batch["episode_id"]]
    vectors = read_episode_vectors(LakeLayout(Path(lake_root)), ids)
    parts = []
    for i, episode_id in enumerate(ids):
        entry = read_entry(cache_folder, episode_id, lay.camera_names)
        v = vectors[episode_id]
        ep = EpisodeLatents(entry.latents, entry.image_steps, v["proprio"], v["actions"], bool(batch["success"][i]),
                            str(batch["instruction"][i]), bool(batch["is_demo"][i]), int(batch["length"][i]),
                            v["object_state"], v["expert_actions"], entry.future_latents, entry.blank)
        rows = sample_rows(ep, lay, gamma)
        if len(rows["t"]):
            parts.append(rows)
    if not parts:
        raise ValueError(f"episodes {ids} have no usable training steps (images at t and t+K)")
    return concat_rows(parts)


def build_datasets(ray: Any, selection: TrainingSelection, lake: LakeLayout, cache_folder: Path,
                   layout: LatentLayout, gamma: float, balance_outcomes: bool, episodes_per_block: int = 4) -> dict:
    """One Ray dataset per stream (see :meth:`TrainingSelection.stream_names`), built through the object store.

    The driver (which sees the lake and the latent cache) reads ``episodes_per_block`` episodes at a time into one
    Arrow block of sample rows and puts it in Ray's object store (which spills to disk when full); it never holds
    more than one block. Workers on any node fetch blocks from there, and every epoch re-reads the blocks instead
    of the lake. (Reading on the driver instead of in Ray Data read tasks saves starting a Python worker that
    imports torch, ~10-30 s on a 2-core machine.)
    """
    import ray.data
    from ray.data.block import BlockAccessor

    reader_kwargs = {"lake_root": str(lake.root), "cache_folder": str(cache_folder), "layout": layout.to_dict(),
                     "gamma": gamma}
    groups: dict[str, list[dict]] = {name: [] for name in selection.stream_names(balance_outcomes)}
    for r in selection.episodes.to_pylist():
        desc = {"episode_id": r["episode_id"], "success": bool(r["success"]), "is_demo": r["source"] == "demo",
                "instruction": r["instruction"], "length": int(r["length"])}
        if r["source"] == "demo":
            groups["demo"].append(desc)
        elif "rollout" in groups:
            groups["rollout"].append(desc)
        else:
            key = "success" if r["success"] else "failure"
            if key in groups:
                groups[key].append(desc)
    datasets = {}
    for name, items in groups.items():
        refs = []
        for s in range(0, len(items), episodes_per_block):
            chunk = items[s:s + episodes_per_block]
            descs = {k: np.array([d[k] for d in chunk], dtype=object if k in ("episode_id", "instruction") else None)
                     for k in chunk[0]}
            refs.append(ray.put(BlockAccessor.batch_to_block(read_samples(descs, **reader_kwargs))))
        datasets[name] = ray.data.from_arrow_refs(refs)
    return datasets


@dataclass
class StreamPosition:
    """Where a worker is in one stream: the epoch and the number of batches taken from it so far."""

    epoch: int = 0
    batches: int = 0


class SampleStream:
    """Endless batches of ``batch_size`` rows from a Ray Train dataset shard (epoch after epoch).

    Each epoch is shuffled locally with a seed of (``seed``, epoch). A stream resumed at ``position`` skips the
    batches of that epoch it already took, so the data order continues rather than restarting. A short last batch
    of an epoch is completed from the next one.
    """

    def __init__(self, shard: Any, batch_size: int, seed: int, position: StreamPosition | None = None,
                 shuffle_buffer: int = 512) -> None:
        self.shard, self.batch_size, self.seed = shard, batch_size, seed
        self.position = position or StreamPosition()
        self.shuffle_buffer = shuffle_buffer
        self._iter: Iterator[dict] | None = None
        self._carry: dict[str, np.ndarray] | None = None

    def _epoch_iter(self) -> Iterator[dict]:
        return iter(self.shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=False,
                                            local_shuffle_buffer_size=self.shuffle_buffer,
                                            local_shuffle_seed=self.seed * 100_003 + self.position.epoch))

    def _raw(self) -> dict[str, np.ndarray]:
        empty_epochs = 0
        while True:
            if self._iter is None:
                self._iter = self._epoch_iter()
                for _ in range(self.position.batches):  # resume: skip what this epoch already gave
                    next(self._iter, None)
            try:
                out = next(self._iter)
                self.position.batches += 1
                return out
            except StopIteration:
                self._iter = None
                empty_epochs = empty_epochs + 1 if self.position.batches == 0 else 0
                if empty_epochs > 1:
                    raise RuntimeError("a training stream yields no samples on this worker") from None
                self.position = StreamPosition(self.position.epoch + 1, 0)

    def next(self) -> dict[str, np.ndarray]:
        """The next ``batch_size`` rows."""
        parts, have = [], 0
        if self._carry is not None:
            parts, have, self._carry = [self._carry], len(self._carry["t"]), None
        while have < self.batch_size:
            raw = self._raw()
            parts.append(raw)
            have += len(raw["t"])
        rows = concat_rows(parts) if len(parts) > 1 else parts[0]
        if have > self.batch_size:
            self._carry = {k: v[self.batch_size:] for k, v in rows.items()}
            rows = {k: v[:self.batch_size] for k, v in rows.items()}
        return rows


class InMemoryShard:
    """A dataset shard over rows held in memory (same interface as a Ray Train shard's ``iter_batches``): for
    single-process loops (benchmarks, tests) over exactly the rows the Ray datasets would hold."""

    def __init__(self, rows: Mapping[str, np.ndarray]) -> None:
        self.rows = dict(rows)

    def iter_batches(self, batch_size: int, batch_format: str = "numpy", drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None, local_shuffle_seed: int | None = None
                     ) -> Iterator[dict[str, np.ndarray]]:
        n = len(self.rows["t"])
        order = np.random.default_rng(local_shuffle_seed).permutation(n)
        for s in range(0, n - (n % batch_size if drop_last else 0), batch_size):
            idx = order[s:s + batch_size]
            yield {k: v[idx] for k, v in self.rows.items()}


class BatchMixer:
    """Per-step sample rows with the run's (policy, world_model, value) fractions.

    ``base``: every type comes from the demo stream. ``refine``: policy samples from demos, world-model and value
    samples from rollouts (half successes, half failures when both streams exist).
    """

    def __init__(self, streams: Mapping[str, SampleStream], fractions: tuple[float, float, float],
                 batch_size: int, seed: int) -> None:
        self.streams = dict(streams)
        self.counts = mix_counts(fractions, batch_size)
        self.seed = seed
        self.take = self.stream_batch_sizes(list(self.streams), fractions, batch_size)

    @staticmethod
    def stream_batch_sizes(names: list[str], fractions: tuple[float, float, float], batch_size: int) -> dict[str, int]:
        """Rows each stream gives per step: the rollout share is split evenly (remainder to the first)."""
        counts = mix_counts(fractions, batch_size)
        rollout = [n for n in names if n != "demo"]
        n_rollout = int(counts[1] + counts[2])
        out = {"demo": int(counts[0]) + (0 if rollout else n_rollout)}
        for i, name in enumerate(rollout):
            out[name] = n_rollout // len(rollout) + (i < n_rollout % len(rollout))
        return out

    def next(self, step: int) -> tuple[dict[str, np.ndarray], list[str]]:
        """Rows and their sample types for one step (deterministic in ``step``)."""
        parts = {name: self.streams[name].next() for name, n in self.take.items() if n > 0}
        n_policy = int(self.counts[0])
        demo = parts.get("demo")
        policy = {k: v[:n_policy] for k, v in demo.items()} if demo is not None else None
        others = [{k: v[n_policy:] for k, v in demo.items()}] if demo is not None and len(demo["t"]) > n_policy \
            else []
        others += [parts[n] for n in parts if n != "demo"]
        rng = np.random.default_rng([self.seed, step])
        if others:
            rest = concat_rows(others)
            perm = rng.permutation(len(rest["t"]))  # mix outcomes across world-model and value samples
            rest = {k: v[perm] for k, v in rest.items()}
        else:
            rest = None
        rows = concat_rows([p for p in (policy, rest) if p is not None])
        types = ["policy"] * n_policy + ["world_model"] * int(self.counts[1]) + ["value"] * int(self.counts[2])
        return rows, types
