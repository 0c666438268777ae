"""Training samples from plain per-episode numpy arrays (entry point for the data pipeline).

Flow: :class:`EpisodeArrays` (images at some steps) → :func:`encode_episode` (tokenizer runs once per image) →
:class:`EpisodeLatents` (cacheable arrays) → :func:`sample_index` / :func:`compose_batch_specs` →
:func:`build_batch` → :class:`TrainingBatch` of tensors for :func:`~cosmos_policy.train_step.train_step`.

Timestep rule: a sample at step ``t`` uses the future step ``t' = min(t + K, T - 1)`` (SPEC §3.4). Images
exist only at ``image_steps``; a step ``t`` is usable iff both ``t`` and ``t'`` are image steps. Rendering at
chunk boundaries ``0, K, 2K, ...`` plus the final step ``T - 1`` makes every boundary usable.

Targets: action chunk ``actions[t : t + K]`` (past the episode end the last action is repeated); future
proprio ``proprio[t']``; value ``2·γ^(T-1-t') - 1`` for a success, ``-1`` for a failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cosmos_policy.latent_layout import SAMPLE_TYPE_IDS, SAMPLE_TYPES, LatentLayout, SampleType
from cosmos_policy.modeling_cosmos_policy import assemble_latents
from cosmos_policy.normalization import NormalizationStats
from cosmos_policy.tokenizer import Tokenizer, blank_latent, encode_slots, is_contextual


@dataclass
class EpisodeArrays:
    """One episode as plain arrays (what the lake holds).

    Attributes:
        images: camera → ``(N, H, W, 3)`` uint8 upright images at ``image_steps``.
        image_steps: ``(N,)`` int steps at which images exist (increasing).
        proprio: ``(T, P)`` float32.
        actions: ``(T, A)`` float32, action executed at each step.
        success: terminal success.
        instruction: task instruction.
        is_demo: demonstration (True) or rollout (False).
        object_state: ``(T, S)`` float32 privileged object state, optional.
        length: T; defaults to ``len(actions)``.
        expert_actions: ``(T, A)`` float32, optional: the expert's un-noised actions where the executed ones were
            perturbed (a perturbed-expert demo); policy samples learn these, world-model samples the executed ones.
    """

    images: Mapping[str, np.ndarray]
    image_steps: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    success: bool
    instruction: str
    is_demo: bool
    object_state: np.ndarray | None = None
    length: int | None = None
    expert_actions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_steps = np.asarray(self.image_steps, dtype=np.int64)
        self.length = int(self.length if self.length is not None else len(self.actions))
        if len(self.proprio) < self.length or len(self.actions) < self.length:
            raise ValueError(f"proprio ({len(self.proprio)}) and actions ({len(self.actions)}) need >= length "
                             f"{self.length} rows")
        for cam, imgs in self.images.items():
            if len(imgs) != len(self.image_steps):
                raise ValueError(f"camera {cam!r} has {len(imgs)} images for {len(self.image_steps)} image_steps")


@dataclass
class EpisodeLatents:
    """An episode with images replaced by cached latents (store these arrays; never re-encode per step).

    Attributes:
        latents: camera → ``(N, C, h, w)`` float16/float32 latents at ``image_steps`` (as current frames).
        future_latents: with a contextual tokenizer, camera → ``(N, C, h, w)``: row i is the future frame of the
            sample at ``image_steps[i]`` (encoded in that sample's clip; zeros where the step is not usable);
            None with a per-image tokenizer, whose future frame is simply the latent at ``t'``.
        blank: ``(C, h, w)`` latent of the blank slot (a contextual tokenizer's black frame), or None for zeros.
        Other fields as in :class:`EpisodeArrays`.
    """

    latents: Mapping[str, np.ndarray]
    image_steps: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    success: bool
    instruction: str
    is_demo: bool
    length: int
    object_state: np.ndarray | None = None
    expert_actions: np.ndarray | None = None
    future_latents: Mapping[str, np.ndarray] | None = None
    blank: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, episode: EpisodeArrays, latents: Mapping[str, np.ndarray],
                    future_latents: Mapping[str, np.ndarray] | None = None,
                    blank: np.ndarray | None = None) -> EpisodeLatents:
        """The episode's non-image arrays with ``latents`` (and a contextual tokenizer's extras) in place of its
        images."""
        return cls(latents, episode.image_steps, np.asarray(episode.proprio, np.float32),
                   np.asarray(episode.actions, np.float32), bool(episode.success), episode.instruction,
                   bool(episode.is_demo), int(episode.length or len(episode.actions)),
                   None if episode.object_state is None else np.asarray(episode.object_state, np.float32),
                   None if episode.expert_actions is None else np.asarray(episode.expert_actions, np.float32),
                   future_latents, blank)


def encode_episode(tokenizer: Tokenizer, episode: EpisodeArrays, cameras: Sequence[str] | None = None,
                   dtype: np.dtype = np.float16, batch_size: int = 64, layout: LatentLayout | None = None
                   ) -> EpisodeLatents:
    """Encode every image of an episode once.

    Args:
        tokenizer: image tokenizer.
        episode: the arrays.
        cameras: cameras to encode (default: all in ``episode.images``; a contextual tokenizer: the layout's).
        dtype: storage dtype of the latents.
        batch_size: images per tokenizer call (clips per call: an eighth of it).
        layout: the latent layout; needed by a contextual tokenizer, which encodes one clip per step (the
            step's images, and for usable steps the images at ``t'``), see :func:`encode_slots`.
    """
    if is_contextual(tokenizer):
        if layout is None:
            raise ValueError(f"{type(tokenizer).__name__} encodes whole clips laid out like the latent frames: "
                             f"encode_episode needs the layout")
        if cameras is not None and tuple(cameras) != layout.camera_names:
            raise ValueError(f"a contextual tokenizer encodes the layout's cameras {layout.camera_names}, "
                             f"not {tuple(cameras)}")
        return _encode_episode_clips(tokenizer, episode, layout, dtype, max(1, batch_size // 8))
    latents = {}
    for cam in cameras or list(episode.images):
        imgs = np.asarray(episode.images[cam])
        parts = [tokenizer.encode(imgs[s:s + batch_size]).numpy() for s in range(0, len(imgs), batch_size)]
        latents[cam] = np.concatenate(parts).astype(dtype)
    return EpisodeLatents.from_arrays(episode, latents)


def _encode_episode_clips(tokenizer: Tokenizer, episode: EpisodeArrays, layout: LatentLayout, dtype: np.dtype,
                          batch_size: int) -> EpisodeLatents:
    """One clip per image step: with the images at ``t'`` where the step is usable, else the current prefix."""
    steps = episode.image_steps
    if not len(steps):
        raise ValueError("the episode has no images to encode")
    length = int(episode.length or len(episode.actions))
    usable = np.isin(steps, valid_steps(episode, layout.chunk_size))
    fpos = np.searchsorted(steps, np.minimum(steps + layout.chunk_size, length - 1))
    images = {c: np.asarray(episode.images[c]) for c in layout.camera_names}
    blank = blank_latent(tokenizer)  # a contextual tokenizer's black frame: also gives the latent shape
    if blank is None:
        raise TypeError(f"{type(tokenizer).__name__} is contextual but gives no blank latent")
    cur = {c: np.zeros((len(steps), *blank.shape), dtype) for c in layout.camera_names}
    fut = {c: np.zeros((len(steps), *blank.shape), dtype) for c in layout.camera_names}
    for with_future in (True, False):
        rows = np.flatnonzero(usable == with_future)
        for s in range(0, len(rows), batch_size):
            idx = rows[s:s + batch_size]
            now, later = encode_slots(tokenizer, layout, {c: v[idx] for c, v in images.items()},
                                      {c: v[fpos[idx]] for c, v in images.items()} if with_future else None)
            for c in layout.camera_names:
                cur[c][idx] = now[c].numpy()
                if later is not None:
                    fut[c][idx] = later[c].numpy()
    return EpisodeLatents.from_arrays(episode, cur, fut, blank.numpy().astype(dtype))


def future_step(t: int, chunk_size: int, length: int) -> int:
    """``t' = min(t + K, T - 1)``."""
    return min(t + chunk_size, length - 1)


def valid_steps(episode: EpisodeLatents | EpisodeArrays, chunk_size: int) -> np.ndarray:
    """Steps ``t < T - 1`` whose ``t`` and ``t'`` both have images."""
    steps = set(int(s) for s in episode.image_steps)
    length = int(episode.length or len(episode.actions))
    return np.array([t for t in sorted(steps) if t < length - 1 and future_step(t, chunk_size, length) in steps],
                    dtype=np.int64)


def value_target(t_future: int, length: int, success: bool, gamma: float = 0.99) -> float:
    """Discounted sparse terminal return mapped to [-1, 1]: ``2·γ^(T-1-t') - 1`` on success, else -1."""
    return 2.0 * gamma ** (length - 1 - t_future) - 1.0 if success else -1.0


@dataclass(frozen=True)
class SampleSpec:
    """Which sample to build: episode index, step t, sample type."""

    episode: int
    t: int
    sample_type: SampleType


def sample_index(episodes: Sequence[EpisodeLatents], chunk_size: int) -> list[tuple[int, int]]:
    """All usable ``(episode, t)`` pairs."""
    return [(e, int(t)) for e, ep in enumerate(episodes) for t in valid_steps(ep, chunk_size)]


def compose_batch_specs(episodes: Sequence[EpisodeLatents], batch_size: int,
                        fractions: tuple[float, float, float] = (0.5, 0.25, 0.25), chunk_size: int = 16,
                        rng: np.random.Generator | None = None, index: Sequence[tuple[int, int]] | None = None
                        ) -> list[SampleSpec]:
    """Draw one batch with the given (policy, world_model, value) fractions.

    Policy samples come from demos; world-model and value samples from rollouts, or from demos when the pool
    has no rollouts (base fine-tuning). Base: ``(0.5, 0.25, 0.25)``; refinement: ``(0.1, 0.45, 0.45)``
    (90% rollout / 10% demo). Counts are rounded so they sum to ``batch_size``.
    """
    rng = rng or np.random.default_rng()
    index = list(index) if index is not None else sample_index(episodes, chunk_size)
    demos = [p for p in index if episodes[p[0]].is_demo]
    rollouts = [p for p in index if not episodes[p[0]].is_demo] or demos
    if not demos and fractions[0] > 0:
        raise ValueError("policy fraction > 0 but no demo samples are available")
    if not rollouts and fractions[0] < 1:
        raise ValueError("no samples available for world-model/value types")
    counts = mix_counts(fractions, batch_size)
    specs: list[SampleSpec] = []
    for sample_type, count in zip(SAMPLE_TYPES, counts, strict=True):
        pool = demos if sample_type == "policy" else rollouts
        for k in rng.integers(0, len(pool), size=int(count)) if count else []:
            specs.append(SampleSpec(pool[k][0], pool[k][1], sample_type))
    return specs


def mix_counts(fractions: Sequence[float], batch_size: int) -> np.ndarray:
    """Samples per type for a batch: ``fractions * batch_size`` rounded (largest remainders) to sum exactly."""
    exact = np.asarray(fractions, dtype=np.float64) * batch_size
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: batch_size - counts.sum()]:
        counts[i] += 1
    return counts


@dataclass
class TrainingBatch:
    """Tensors of one training batch.

    Attributes:
        latents: ``(B, C, T', H, W)`` clean x_0 (images + injected vectors).
        cond_mask: ``(B, T')`` bool conditioning mask.
        sample_type: ``(B,)`` long ids (0 policy, 1 world_model, 2 value).
        actions: ``(B, K, A)`` normalised action targets.
        values: ``(B,)`` value targets in [-1, 1].
        instructions: B strings.
        text: optional ``(B, L, D)`` precomputed text embeddings (otherwise the model encodes ``instructions``).
    """

    latents: torch.Tensor
    cond_mask: torch.Tensor
    sample_type: torch.Tensor
    actions: torch.Tensor
    values: torch.Tensor
    instructions: list[str]
    text: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(self.latents.to(device), self.cond_mask.to(device), self.sample_type.to(device),
                             self.actions.to(device), self.values.to(device), self.instructions,
                             None if self.text is None else self.text.to(device))

    def __len__(self) -> int:
        return self.latents.shape[0]


def _image_positions(ep: EpisodeLatents, steps: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(ep.image_steps, steps)
    bad = (pos >= len(ep.image_steps)) | (ep.image_steps[np.minimum(pos, len(ep.image_steps) - 1)] != steps)
    if bad.any():
        raise ValueError(f"no image at steps {steps[bad].tolist()} (image_steps {ep.image_steps.tolist()})")
    return pos


def sample_rows(ep: EpisodeLatents, layout: LatentLayout, gamma: float = 0.99,
                steps: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Columnar training samples of one episode, one row per step (default: every :func:`valid_steps`).

    Rows hold raw units (normalisation happens in :func:`batch_from_rows`, with the checkpoint's statistics), so
    they can be stored or streamed (e.g. as Ray Data blocks) independently of any model.

    Returns:
        ``t`` ``(n,)``; ``latent.<cam>`` / ``future_latent.<cam>`` ``(n, C, h, w)``; ``proprio`` /
        ``future_proprio`` ``(n, P)``; ``actions`` ``(n, K, A)`` (past the end the last action repeats);
        ``value`` ``(n,)`` target in [-1, 1]; ``success`` / ``is_demo`` ``(n,)`` bool; ``instruction`` ``(n,)``
        str; ``object_state`` ``(n, S)`` when the layout has that slot.
    """
    k = layout.chunk_size
    ts = valid_steps(ep, k) if steps is None else np.asarray(steps, dtype=np.int64)
    tf = np.minimum(ts + k, ep.length - 1)
    pos, fpos = _image_positions(ep, ts), _image_positions(ep, tf)
    rows: dict[str, np.ndarray] = {"t": ts}
    for c in layout.camera_names:
        rows[f"latent.{c}"] = np.asarray(ep.latents[c])[pos]
        future = ep.latents[c] if ep.future_latents is None else ep.future_latents[c]
        rows[f"future_latent.{c}"] = np.asarray(future)[pos if ep.future_latents is not None else fpos]
    if ep.blank is not None:
        rows["blank"] = np.broadcast_to(np.asarray(ep.blank), (len(ts), *np.shape(ep.blank))).copy()
    rows["proprio"] = np.asarray(ep.proprio, np.float32)[ts]
    rows["future_proprio"] = np.asarray(ep.proprio, np.float32)[tf]
    chunk = np.minimum(ts[:, None] + np.arange(k)[None, :], ep.length - 1)
    rows["actions"] = np.asarray(ep.actions, np.float32)[chunk]
    labels = ep.actions if ep.expert_actions is None else ep.expert_actions
    rows["expert_actions"] = np.asarray(labels, np.float32)[chunk]
    rows["value"] = np.array([value_target(int(f), ep.length, ep.success, gamma) for f in tf], np.float32)
    rows["success"] = np.full(len(ts), bool(ep.success))
    rows["is_demo"] = np.full(len(ts), bool(ep.is_demo))
    rows["instruction"] = np.array([ep.instruction] * len(ts), dtype=object)
    if layout.object_state_dim:
        if ep.object_state is None:
            raise ValueError("layout has an object_state slot: episodes need object_state")
        rows["object_state"] = np.asarray(ep.object_state, np.float32)[ts]
    return rows


def concat_rows(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate columnar row dicts with the same keys."""
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}


def batch_from_rows(rows: Mapping[str, np.ndarray], sample_types: Sequence[SampleType], layout: LatentLayout,
                    stats: NormalizationStats) -> TrainingBatch:
    """Rows of :func:`sample_rows` (any order, any source) → a :class:`TrainingBatch` (injection + masks).

    Args:
        rows: columnar samples (``len(sample_types)`` rows).
        sample_types: what each row trains (policy / world_model / value).
        layout: frame layout.
        stats: normalisation statistics (demonstration min/max).
    """
    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    n = len(sample_types)
    if len(rows["t"]) != n:
        raise ValueError(f"{len(rows['t'])} rows for {n} sample types")
    obj = None
    if layout.object_state_dim:
        if "object_state" not in rows or stats.object_state is None:
            raise ValueError("layout has an object_state slot: rows and stats need object_state")
        obj = tensor(stats.object_state.normalize(rows["object_state"]))
    raw_actions = np.asarray(rows["actions"], np.float32)
    if "expert_actions" in rows:  # policy samples learn the expert's labels; world-model/value samples what ran
        is_policy = np.array([t == "policy" for t in sample_types])[:, None, None]
        raw_actions = np.where(is_policy, np.asarray(rows["expert_actions"], np.float32), raw_actions)
    actions = tensor(stats.action.normalize(raw_actions))
    values = tensor(rows["value"])
    latents = assemble_latents(
        layout, {c: tensor(rows[f"latent.{c}"]) for c in layout.camera_names},
        tensor(stats.proprio.normalize(rows["proprio"])), obj, actions,
        {c: tensor(rows[f"future_latent.{c}"]) for c in layout.camera_names},
        tensor(stats.proprio.normalize(rows["future_proprio"])), values,
        blank=tensor(rows["blank"]) if "blank" in rows else None)
    return TrainingBatch(latents, layout.condition_masks(list(sample_types)),
                         torch.tensor([SAMPLE_TYPE_IDS[t] for t in sample_types], dtype=torch.long), actions, values,
                         [str(x) for x in rows["instruction"]])


def build_batch(episodes: Sequence[EpisodeLatents], specs: Sequence[SampleSpec], layout: LatentLayout,
                stats: NormalizationStats, gamma: float = 0.99) -> TrainingBatch:
    """Turn sample specs into tensors (injection + masks); no tokenizer call."""
    rows = concat_rows([sample_rows(episodes[s.episode], layout, gamma, [s.t]) for s in specs])
    return batch_from_rows(rows, [s.sample_type for s in specs], layout, stats)
