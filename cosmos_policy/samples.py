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
from cosmos_policy.tokenizer import Tokenizer


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
        latents: camera → ``(N, C, h, w)`` float16/float32 latents at ``image_steps``.
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

    @classmethod
    def from_arrays(cls, episode: EpisodeArrays, latents: Mapping[str, np.ndarray]) -> EpisodeLatents:
        """The episode's non-image arrays with ``latents`` in place of its images."""
        return cls(latents, episode.image_steps, np.asarray(episode.proprio, np.float32),
                   np.asarray(episode.actions, np.float32), bool(episode.success), episode.instruction,
                   bool(episode.is_demo), int(episode.length or len(episode.actions)),
                   None if episode.object_state is None else np.asarray(episode.object_state, np.float32))


def encode_episode(tokenizer: Tokenizer, episode: EpisodeArrays, cameras: Sequence[str] | None = None,
                   dtype: np.dtype = np.float16, batch_size: int = 64) -> EpisodeLatents:
    """Encode every image of an episode once.

    Args:
        tokenizer: image tokenizer.
        episode: the arrays.
        cameras: cameras to encode (default: all in ``episode.images``).
        dtype: storage dtype of the latents.
        batch_size: images per tokenizer call.
    """
    latents = {}
    for cam in cameras or list(episode.images):
        imgs = np.asarray(episode.images[cam])
        parts = [tokenizer.encode(imgs[s:s + batch_size]).numpy() for s in range(0, len(imgs), batch_size)]
        latents[cam] = np.concatenate(parts).astype(dtype)
    return EpisodeLatents.from_arrays(episode, latents)


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
    counts = np.floor(np.asarray(fractions) * batch_size).astype(int)
    for i in np.argsort(-(np.asarray(fractions) * batch_size - counts))[: batch_size - counts.sum()]:
        counts[i] += 1
    specs: list[SampleSpec] = []
    for sample_type, count in zip(SAMPLE_TYPES, counts, strict=True):
        pool = demos if sample_type == "policy" else rollouts
        for k in rng.integers(0, len(pool), size=int(count)) if count else []:
            specs.append(SampleSpec(pool[k][0], pool[k][1], sample_type))
    return specs


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
    """

    latents: torch.Tensor
    cond_mask: torch.Tensor
    sample_type: torch.Tensor
    actions: torch.Tensor
    values: torch.Tensor
    instructions: list[str]

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(self.latents.to(device), self.cond_mask.to(device), self.sample_type.to(device),
                             self.actions.to(device), self.values.to(device), self.instructions)

    def __len__(self) -> int:
        return self.latents.shape[0]


def _latent_at(ep: EpisodeLatents, cam: str, t: int) -> np.ndarray:
    pos = int(np.searchsorted(ep.image_steps, t))
    if pos >= len(ep.image_steps) or ep.image_steps[pos] != t:
        raise ValueError(f"no image at step {t} (image_steps {ep.image_steps.tolist()})")
    return ep.latents[cam][pos]


def build_batch(episodes: Sequence[EpisodeLatents], specs: Sequence[SampleSpec], layout: LatentLayout,
                stats: NormalizationStats, gamma: float = 0.99) -> TrainingBatch:
    """Turn sample specs into tensors (injection + masks); no tokenizer call."""
    k = layout.chunk_size
    cams: dict[str, list[np.ndarray]] = {c: [] for c in layout.camera_names}
    fcams: dict[str, list[np.ndarray]] = {c: [] for c in layout.camera_names}
    prop, fprop, obj, acts, vals, instr = [], [], [], [], [], []
    for spec in specs:
        ep = episodes[spec.episode]
        t, tf = spec.t, future_step(spec.t, k, ep.length)
        for c in layout.camera_names:
            cams[c].append(_latent_at(ep, c, t))
            fcams[c].append(_latent_at(ep, c, tf))
        prop.append(ep.proprio[t])
        fprop.append(ep.proprio[tf])
        idx = np.minimum(np.arange(t, t + k), ep.length - 1)
        acts.append(ep.actions[idx])
        vals.append(value_target(tf, ep.length, ep.success, gamma))
        instr.append(ep.instruction)
        if layout.object_state_dim:
            if ep.object_state is None or stats.object_state is None:
                raise ValueError("layout has an object_state slot: episodes and stats need object_state")
            obj.append(stats.object_state.normalize(ep.object_state[t]))

    def stack(xs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(xs).astype(np.float32))

    actions = stack([stats.action.normalize(a) for a in acts])
    values = torch.tensor(vals, dtype=torch.float32)
    latents = assemble_latents(
        layout, {c: stack(v) for c, v in cams.items()}, stack([stats.proprio.normalize(p) for p in prop]),
        stack(obj) if obj else None, actions, {c: stack(v) for c, v in fcams.items()},
        stack([stats.proprio.normalize(p) for p in fprop]), values)
    types = [s.sample_type for s in specs]
    return TrainingBatch(latents, layout.condition_masks(types),
                         torch.tensor([SAMPLE_TYPE_IDS[t] for t in types], dtype=torch.long), actions, values, instr)
