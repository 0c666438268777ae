"""In-memory episodes and their conversion to Arrow tables of the lake schemas.

An :class:`EpisodeData` holds one episode column-wise as numpy arrays; :func:`episodes_to_tables`
turns a batch of them into one ``episodes`` table and one ``steps`` table without Python loops over
steps (list columns are built from flat buffers and offsets).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from storage_schemas.keys import Source
from storage_schemas.schemas import EPISODES_SCHEMA, SCHEMA_VERSION, STEPS_SCHEMA

DEFAULT_GAMMA = 0.99


def rollout_episode_id(source: Source | str, iteration: int, suite: str, task_id: int, init_state_index: int,
                       seed: int, policy: str = "") -> str:
    """Deterministic id of a simulated episode: a retried shard re-writes, never duplicates."""
    key = f"{Source(source)}|{iteration}|{suite}|{task_id}|{init_state_index}|{seed}|{policy}"
    return f"{Source(source)}-{hashlib.sha1(key.encode()).hexdigest()[:20]}"


def content_episode_id(suite: str, instruction: str, actions: np.ndarray, proprio: np.ndarray) -> str:
    """Deterministic id of an ingested demo from its content (same episode, same id, whatever its path)."""
    h = hashlib.sha1()
    h.update(f"{suite}|{instruction}|{actions.shape}|{proprio.shape}".encode())
    h.update(np.ascontiguousarray(actions, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(proprio, dtype=np.float32).tobytes())
    return f"demo-{h.hexdigest()[:20]}"


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 -> PNG bytes (lossless)."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``(H, W, 3)`` uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


@dataclass(frozen=True)
class EpisodeMeta:
    """Episode-level fields of one ``episodes`` row (see ``EPISODES_SCHEMA``)."""

    episode_id: str
    source: Source
    suite: str
    task_id: int
    instruction: str
    dataset_id: str
    iteration: int = 0
    policy: str = "demo"
    policy_version: str | None = None
    planning: bool = False
    seed: int | None = None
    init_state_index: int | None = None
    success: bool = True
    wall_time_s: float | None = None
    gamma: float = DEFAULT_GAMMA
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    inference: str | None = None  # a model's inference settings (tasks.rollouts.inference_settings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Source(self.source))
        if not self.episode_id:
            raise ValueError("episode_id must not be empty")
        if not self.suite or "/" in self.suite or "=" in self.suite:
            raise ValueError(f"invalid suite name {self.suite!r}")
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")


@dataclass
class EpisodeData:
    """One episode, column-wise.

    Attributes:
        meta: episode-level fields.
        proprio: ``(T, P)`` float32, the observation before each action.
        actions: ``(T, A)`` float32.
        images: camera -> {t: PNG bytes or ``(H, W, 3)`` uint8 array}; only rendered steps.
        object_state: optional ``(T, S)`` float32 privileged state.
        expert_actions: optional ``(T, A)`` float32: the expert's un-noised actions where ``actions`` (what was
            executed) were perturbed.
    """

    meta: EpisodeMeta
    proprio: np.ndarray
    actions: np.ndarray
    images: Mapping[str, Mapping[int, bytes | np.ndarray]] = field(default_factory=dict)
    object_state: np.ndarray | None = None
    expert_actions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.proprio.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f"proprio and actions must be 2-D (T, D); got {self.proprio.shape} and {self.actions.shape}")
        if len(self.proprio) != len(self.actions):
            raise ValueError(f"episode {self.meta.episode_id}: {len(self.proprio)} proprio rows but {len(self.actions)} actions")
        if len(self.actions) == 0 and self.meta.error is None:
            raise ValueError(f"episode {self.meta.episode_id} has no steps")
        if self.object_state is not None:
            self.object_state = np.asarray(self.object_state, dtype=np.float32)
            if len(self.object_state) != len(self.actions):
                raise ValueError(f"episode {self.meta.episode_id}: object_state has {len(self.object_state)} rows")
        if self.expert_actions is not None:
            self.expert_actions = np.asarray(self.expert_actions, dtype=np.float32)
            if self.expert_actions.shape != self.actions.shape:
                raise ValueError(f"episode {self.meta.episode_id}: expert_actions {self.expert_actions.shape} vs "
                                 f"actions {self.actions.shape}")
        for cam, frames in self.images.items():
            bad = [t for t in frames if not 0 <= t < len(self.actions)]
            if bad:
                raise ValueError(f"episode {self.meta.episode_id}: camera {cam} has images at steps {bad[:3]} outside [0, {len(self.actions)})")

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[1]

    def value_targets(self) -> np.ndarray:
        """Discounted return of the sparse terminal reward from every step: ``gamma**(T-1-t)`` or 0."""
        T = self.length
        if not self.meta.success:
            return np.zeros(T, dtype=np.float32)
        return (self.meta.gamma ** np.arange(T - 1, -1, -1, dtype=np.float64)).astype(np.float32)


def _list_array(arrays: Sequence[np.ndarray]) -> pa.Array:
    """Stack row blocks ``(T_i, D_i)`` into one list<float32> column without per-row Python work."""
    rows = [a.reshape(len(a), math.prod(a.shape[1:])) for a in arrays]
    if not rows:
        return pa.ListArray.from_arrays(pa.array(np.zeros(1, np.int32)), pa.array(np.zeros(0, np.float32)))
    widths = {r.shape[1] for r in rows}
    if len(widths) == 1:  # the usual batch: one width, offsets are a range
        (width,) = widths
        n = sum(len(r) for r in rows)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32) if width else np.zeros(n + 1, np.int32)
    else:
        lengths = np.concatenate([np.full(len(r), r.shape[1], dtype=np.int32) for r in rows])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([r.ravel() for r in rows]).astype(np.float32, copy=False)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))


def _images_column(episodes: Sequence[EpisodeData], n_rows: int) -> pa.Array:
    """The ``images`` map column: one (camera -> PNG) entry per image, grouped by step row; null on steps
    without images. Built from flat key/value arrays and offsets (Python work per image, not per step)."""
    rows: list[np.ndarray] = []  # global step row of every image
    cams: list[str] = []
    data: list[bytes] = []
    start = 0
    for ep in episodes:
        for cam, frames in ep.images.items():
            rows.append(np.fromiter(frames.keys(), dtype=np.int64, count=len(frames)) + start)
            cams.extend([cam] * len(frames))
            for img in frames.values():
                if isinstance(img, bytes):
                    data.append(img)
                elif isinstance(img, bytearray):
                    data.append(bytes(img))
                else:
                    data.append(encode_png(np.asarray(img)))
        start += ep.length
    if not data:
        return pa.nulls(n_rows, type=pa.map_(pa.string(), pa.binary()))
    row = np.concatenate(rows)
    order = np.argsort(row, kind="stable")  # by step; within a step, cameras keep their dict order
    counts = np.bincount(row, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    if not np.all(order[1:] > order[:-1]):  # not already grouped by step: reorder the entries
        cams = [cams[i] for i in order]
        data = [data[i] for i in order]
    return pa.MapArray.from_arrays(pa.array(offsets), pa.array(cams, pa.string()), pa.array(data, pa.binary()),
                                   type=pa.map_(pa.string(), pa.binary()), mask=pa.array(counts == 0))



def _repeat(values: list, repeats: np.ndarray, type_: pa.DataType) -> pa.Array:
    """``values[i]`` repeated ``repeats[i]`` times, as an Arrow array (no per-row Python objects)."""
    if len(set(values)) == 1:  # one shard is one partition: a single value
        return pa.repeat(pa.scalar(values[0], type_), int(repeats.sum()))
    return pa.array(values, type_).take(pa.array(np.repeat(np.arange(len(values)), repeats)))


def episodes_to_tables(episodes: Sequence[EpisodeData]) -> tuple[pa.Table, pa.Table]:
    """Convert episodes to ``(episodes_table, steps_table)`` matching the lake schemas.

    The partition columns ``source``, ``iteration`` and ``suite`` are included so the writer can route
    rows; it strips them before writing.
    """
    metas = [e.meta for e in episodes]
    ep_cols = {
        "episode_id": [m.episode_id for m in metas],
        "schema_version": [SCHEMA_VERSION] * len(metas),
        "dataset_id": [m.dataset_id for m in metas],
        "task_id": [m.task_id for m in metas],
        "instruction": [m.instruction for m in metas],
        "policy": [m.policy for m in metas],
        "policy_version": [m.policy_version for m in metas],
        "planning": [m.planning for m in metas],
        "seed": [m.seed for m in metas],
        "init_state_index": [m.init_state_index for m in metas],
        "success": [m.success for m in metas],
        "terminal_reward": [1.0 if m.success else 0.0 for m in metas],
        "length": [e.length for e in episodes],
        "wall_time_s": [m.wall_time_s for m in metas],
        "gamma": [m.gamma for m in metas],
        "action_dim": [e.action_dim for e in episodes],
        "proprio_dim": [e.proprio_dim for e in episodes],
        "cameras": [sorted(e.images) for e in episodes],
        "error": [m.error for m in metas],
        "created_at": [m.created_at for m in metas],
        "inference": [m.inference for m in metas],
    }
    ep_table = pa.Table.from_pydict(ep_cols, schema=EPISODES_SCHEMA)
    ep_table = _with_partitions(ep_table, metas, [1] * len(metas))

    lengths = [e.length for e in episodes]
    reps = np.asarray(lengths, dtype=np.int64)
    n = int(reps.sum())
    rewards = np.zeros(n, dtype=np.float32)
    dones = np.zeros(n, dtype=bool)
    ends = np.cumsum(lengths) - 1
    for end, e in zip(ends, episodes, strict=True):
        if e.length:
            dones[end] = True
            rewards[end] = 1.0 if e.meta.success else 0.0
    state = _optional_rows([e.object_state for e in episodes], lengths, n)
    expert = _optional_rows([e.expert_actions for e in episodes], lengths, n)
    step_cols = {
        "episode_id": _repeat([m.episode_id for m in metas], reps, pa.string()),
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
        "dataset_id": _repeat([m.dataset_id for m in metas], reps, pa.string()),
        "t": pa.array(np.concatenate([np.arange(L, dtype=np.int32) for L in lengths]) if n else np.zeros(0, np.int32)),
        "proprio": _list_array([e.proprio for e in episodes]),
        "action": _list_array([e.actions for e in episodes]),
        "reward": pa.array(rewards),
        "done": pa.array(dones),
        "value_target": pa.array(np.concatenate([e.value_targets() for e in episodes]) if n else np.zeros(0, np.float32)),
        "images": _images_column(episodes, n),
        "object_state": state,
        "expert_action": expert,
    }
    steps_table = pa.Table.from_pydict(step_cols, schema=STEPS_SCHEMA)
    steps_table = _with_partitions(steps_table, metas, lengths)
    return ep_table, steps_table


def _optional_rows(per_episode: Sequence[np.ndarray | None], lengths: Sequence[int], n: int) -> pa.Array:
    """A nullable list column: each episode's ``(T, D)`` rows, or nulls for episodes without."""
    present = [x is not None for x in per_episode]
    if not any(present):
        return pa.nulls(n, type=pa.list_(pa.float32()))
    mask = np.repeat(np.array(present), lengths)
    arr = _list_array([x if x is not None else np.zeros((L, 0), np.float32) for x, L in zip(per_episode, lengths, strict=True)])
    return pa.ListArray.from_arrays(arr.offsets, arr.values, mask=pa.array(~mask))


def _with_partitions(table: pa.Table, metas: Sequence[EpisodeMeta], repeats: Sequence[int]) -> pa.Table:
    reps = np.asarray(repeats, dtype=np.int64)
    table = table.append_column("source", _repeat([str(m.source) for m in metas], reps, pa.string()))
    table = table.append_column("iteration", _repeat([int(m.iteration) for m in metas], reps, pa.int32()))
    return table.append_column("suite", _repeat([m.suite for m in metas], reps, pa.string()))
