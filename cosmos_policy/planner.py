"""Best-of-N planning with the world model and value function (Cosmos Policy §3.6), fully batched.

For each observation: sample N candidate action chunks (policy), W future states per candidate (world model),
V values per predicted future (value function), aggregate the W·V values per candidate with the
**majority mean**, execute the best candidate. The candidates may come from one model and the futures and values
from another, the *planning model* (as in the reference: the demo-trained policy proposes, the 90/10-refined
model predicts and scores). Each stage is one :meth:`CosmosPolicyModel.generate` over all
``B·N``, ``B·N·W`` or ``B·N·W·V`` rows (split only by ``max_batch_size``). Noise comes from one
``torch.Generator`` per row, seeded from (seed, observation, candidate, world sample, value sample), so the
result does not depend on how rows are batched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cosmos_policy.configuration_cosmos_policy import PlannerConfig
from cosmos_policy.latent_layout import LatentLayout, inject
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel


def row_seed(*parts: int) -> int:
    """Stable 63-bit seed from integers (independent of batching and of Python's hash seed)."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_noise(row_shape: Sequence[int], seeds: Sequence[int], device: torch.device | str = "cpu"
                 ) -> torch.Tensor:
    """``(len(seeds), *row_shape)`` standard normal noise, row ``i`` from ``torch.Generator(seed_i)``."""
    rows = [torch.randn(*row_shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows).to(device)


def majority_mean(values: torch.Tensor, threshold: float = 0.05, minority_score: str = "failure_mean"
                  ) -> torch.Tensor:
    """Majority-mean aggregation of value estimates (Cosmos Policy §3.6).

    An estimate above ``threshold`` is a predicted success. If at least half of the M estimates are successes,
    the score is the mean of the successes; otherwise it is the mean of the failures (``"failure_mean"``) or 0
    (``"zero"``).

    Args:
        values: ``(..., M)`` values in [0, 1].

    Returns:
        ``(...)`` scores.
    """
    success = values > threshold
    n_success = success.sum(-1)
    m = values.shape[-1]
    succ_mean = (values * success).sum(-1) / n_success.clamp_min(1)
    if minority_score == "zero":
        fail_score = torch.zeros_like(succ_mean)
    elif minority_score == "failure_mean":
        fail_score = (values * ~success).sum(-1) / (m - n_success).clamp_min(1)
    else:
        raise ValueError(f"minority_score must be 'failure_mean' or 'zero', got {minority_score!r}")
    return torch.where(2 * n_success >= m, succ_mean, fail_score)


@dataclass
class PlanOutput:
    """Result of planning for a batch of B observations.

    Attributes:
        candidates: ``(B, N, K, A)`` normalised candidate action chunks.
        values: ``(B, N, M)`` value estimates in [0, 1] per candidate (M = W·V).
        scores: ``(B, N)`` majority-mean scores.
        chosen: ``(B,)`` index of the executed candidate.
        actions: ``(B, K, A)`` normalised chosen chunks.
        num_forward_calls: denoiser forwards used.
    """

    candidates: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    chosen: torch.Tensor
    actions: torch.Tensor
    num_forward_calls: int


class _CallCounter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


def _stage(model: CosmosPolicyModel, cond: torch.Tensor, sample_type: str, text: torch.Tensor,
           seeds: Sequence[int], max_batch_size: int, num_steps: int | None = None) -> torch.Tensor:
    mask = model.condition_masks(sample_type, cond.shape[0])  # type: ignore[arg-type]
    noise = seeded_noise(cond.shape[1:], seeds, cond.device)
    return model.generate(cond, mask, text, noise, max_batch_size=max_batch_size, num_steps=num_steps)


def sample_chain(model: CosmosPolicyModel, current: torch.Tensor, text: torch.Tensor, seeds: Sequence[int],
                 mode: str = "parallel", max_batch_size: int = 256) -> torch.Tensor:
    """Direct sampling from the current frames.

    Args:
        current: ``(B, C, T', H, W)`` with current frames filled.
        text: ``(B, L, D)``.
        seeds: one seed per row.
        mode: ``"parallel"`` (action, future and value in one pass) or ``"autoregressive"`` (action, then
            future given the action, then value given both).

    Returns:
        ``(B, C, T', H, W)`` predicted sequence.
    """
    x = _stage(model, current, "policy", text, [row_seed(s, 0) for s in seeds], max_batch_size)
    if mode == "parallel":
        return x
    if mode != "autoregressive":
        raise ValueError(f"mode must be 'parallel' or 'autoregressive', got {mode!r}")
    x = _reinject_action(model, current, x)
    x = _stage(model, x, "world_model", text, [row_seed(s, 1) for s in seeds], max_batch_size)
    return _stage(model, x, "value", text, [row_seed(s, 2) for s in seeds], max_batch_size)


def _reinject_action(model: CosmosPolicyModel, current: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Current frames + the sampled action (extracted, clipped to [-1, 1], injected again)."""
    return with_actions(model.layout, current, model.extract_action(sampled))


def with_actions(layout: LatentLayout, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """A copy of ``latents`` (B rows) with ``actions`` (``(B, K, A)`` normalised) clipped to [-1, 1] and injected into
    the action frame."""
    out = latents.clone()
    out[:, :, layout.action_index] = inject(actions.reshape(len(out), -1).clamp(-1, 1).to(out),
                                            (layout.latent_channels, layout.latent_height, layout.latent_width))
    return out


@torch.no_grad()
def plan(model: CosmosPolicyModel, current: torch.Tensor, text: torch.Tensor, config: PlannerConfig,
         seed: int | Sequence[int] = 0, planning_model: CosmosPolicyModel | None = None) -> PlanOutput:
    """Best-of-N planning.

    Args:
        model: the Cosmos Policy model that proposes the candidates (its policy).
        current: ``(B, C, T', H, W)`` latents with the current frames filled (other frames ignored).
        text: ``(B, L, D)`` text embeddings.
        config: N, W, V, threshold, mode (``model_based`` or ``q``), ``max_batch_size``.
        seed: base seed, row noise seeded from (seed, b, candidate, world, value); or one seed per observation,
            row noise seeded from (seed_b, candidate, world, value), so an observation's plan does not depend on
            the other rows of the batch.

        planning_model: the model whose world model and value function judge the candidates (same latent layout);
            None: ``model`` itself.

    Returns:
        :class:`PlanOutput` (``num_forward_calls`` counts both models' forwards).
    """
    judge = model if planning_model is None else planning_model
    _check_layouts(model, judge)
    b = current.shape[0]
    base = _base_keys(seed, b)
    n = config.num_candidates
    counters = [_CallCounter(model.transformer)] + ([_CallCounter(judge.transformer)] if judge is not model else [])
    try:
        rows = current.repeat_interleave(n, 0)
        text_n = text.repeat_interleave(n, 0)
        ids = [(*base[i], j) for i in range(b) for j in range(n)]
        x_pol = _stage(model, rows, "policy", text_n, [row_seed(*key) for key in ids], config.max_batch_size)
        candidates = model.extract_action(x_pol).clamp(-1, 1)
        values = _judge(judge, _reinject_action(model, rows, x_pol), text_n, ids, config).reshape(b, n, -1)
    finally:
        for counter in counters:
            counter.remove()
    scores = majority_mean(values, config.success_threshold, config.minority_score)
    chosen = scores.argmax(dim=1)
    candidates = candidates.reshape(b, n, *candidates.shape[1:])
    actions = candidates[torch.arange(b), chosen]
    return PlanOutput(candidates, values, scores, chosen, actions, sum(c.count for c in counters))


@torch.no_grad()
def score_candidates(judge: CosmosPolicyModel, current: torch.Tensor, text: torch.Tensor, candidates: torch.Tensor,
                     config: PlannerConfig, seed: int | Sequence[int] = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge given candidate chunks as :func:`plan` does (world model, then value, majority mean).

    With the candidates of a ``plan`` call and the same ``seed`` and settings, the values equal that plan's; other
    seeds or W / V give a second opinion on the same candidates.

    Args:
        judge: the model whose world model and value function score the candidates.
        current: ``(B, C, T', H, W)`` latents with the current frames filled.
        text: ``(B, L, D)`` text embeddings.
        candidates: ``(B, N, K, A)`` normalised action chunks (clipped to [-1, 1] before injection).
        config: W, V, threshold, mode and the judging stages' solver steps (``num_candidates`` is ignored).
        seed: as in :func:`plan`.

    Returns:
        ``(values (B, N, W*V), scores (B, N))``.
    """
    b, n = candidates.shape[:2]
    rows = with_actions(judge.layout, current.repeat_interleave(n, 0), candidates.reshape(b * n, *candidates.shape[2:]))
    base = _base_keys(seed, b)
    ids = [(*base[i], j) for i in range(b) for j in range(n)]
    values = _judge(judge, rows, text.repeat_interleave(n, 0), ids, config).reshape(b, n, -1)
    return values, majority_mean(values, config.success_threshold, config.minority_score)


@torch.no_grad()
def value_of_futures(judge: CosmosPolicyModel, filled: torch.Tensor, text: torch.Tensor, num_samples: int,
                     seeds: Sequence[int], num_steps: int | None = None, max_batch_size: int = 256) -> torch.Tensor:
    """Value samples conditioned on given (e.g. observed) futures: ``filled`` holds the current frames, the action
    and the future frames; returns ``(B, num_samples)`` values in [0, 1], row ``b``'s sample ``q`` seeded from
    ``(seeds[b], q)``."""
    b = filled.shape[0]
    x = _stage(judge, filled.repeat_interleave(num_samples, 0), "value", text.repeat_interleave(num_samples, 0),
               [row_seed(int(s), q) for s in seeds for q in range(num_samples)], max_batch_size, num_steps)
    return judge.extract_value(x).reshape(b, num_samples)


def _check_layouts(model: CosmosPolicyModel, judge: CosmosPolicyModel) -> None:
    if judge.layout != model.layout:
        raise ValueError(f"the planning model's latent layout differs from the policy's ({judge.layout} vs "
                         f"{model.layout}): both must be trained for the same suite, cameras and chunk size")


def _base_keys(seed: int | Sequence[int], b: int) -> list[tuple[int, ...]]:
    """Per observation key prefix: (seed, b) for one base seed, (seed_b,) for one seed per observation."""
    if isinstance(seed, int):
        return [(seed, i) for i in range(b)]
    if len(seed) != b:
        raise ValueError(f"{len(seed)} seeds for {b} observations")
    return [(int(s),) for s in seed]


def _judge(judge: CosmosPolicyModel, with_action: torch.Tensor, text: torch.Tensor, keys: Sequence[tuple[int, ...]],
           config: PlannerConfig) -> torch.Tensor:
    """``(R, W*V)`` values of R rows holding current frames and a candidate action; row ``r``'s noise is seeded
    from ``keys[r]`` + (world sample, value sample), or + (sample, -1) for the ``q`` mode."""
    w, v, mbs = config.num_world_samples, config.num_value_samples, config.max_batch_size
    if config.mode == "q":
        m = w * v
        x_q = _stage(judge, with_action.repeat_interleave(m, 0), "world_model", text.repeat_interleave(m, 0),
                     [row_seed(*key, k, -1) for key in keys for k in range(m)], mbs, config.world_model_steps)
        return judge.extract_value(x_q).reshape(len(keys), m)
    text_w = text.repeat_interleave(w, 0)
    ids_w = [(*key, k) for key in keys for k in range(w)]
    x_wm = _stage(judge, with_action.repeat_interleave(w, 0), "world_model", text_w,
                  [row_seed(*key) for key in ids_w], mbs, config.world_model_steps)
    x_val = _stage(judge, x_wm.repeat_interleave(v, 0), "value", text_w.repeat_interleave(v, 0),
                   [row_seed(*key, q) for key in ids_w for q in range(v)], mbs, config.value_steps)
    return judge.extract_value(x_val).reshape(len(keys), w * v)
