"""Offline evaluation of the value head and the world model on recorded episodes (pure functions).

Both run the model's own sampler on samples of held-out episodes (``samples.batch_from_rows``):

* :func:`predict_values` — the ``value`` sample type: current frames, the executed action chunk and the *real*
  future frames are given; the value frame is sampled and decoded to [0, 1]. Ranked against the episode's
  real outcome, it gives the value head's ROC AUC (:func:`roc_auc`).
* :func:`world_model_errors` — the ``world_model`` sample type: current frames and the executed action chunk are
  given; the future frames are sampled and compared with the real ones (mean squared error in latent units).
* :func:`sampled_action_l1` — the ``policy`` sample type: only the current frames are given; the action chunk is
  fully sampled (the chunk the policy would execute) and compared with the demonstrated one (L1 in normalised
  action units, [-1, 1]; predicting the mean action scores about 0.27 on LIBERO-Object demos).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.planner import row_seed, seeded_noise
from cosmos_policy.samples import TrainingBatch


def _generate(model: CosmosPolicyModel, batch: TrainingBatch, sample_type: str, seed: int,
              max_batch_size: int, num_steps: int | None = None) -> torch.Tensor:
    b = len(batch)
    latents = batch.latents.to(model.device)
    text = batch.text.to(model.device) if batch.text is not None else model.encode_text(batch.instructions)
    noise = seeded_noise(latents.shape[1:], [row_seed(seed, i) for i in range(b)], model.device)
    return model.generate(latents, model.condition_masks(sample_type, b), text, noise,  # type: ignore[arg-type]
                          max_batch_size=max_batch_size, num_steps=num_steps)


@torch.no_grad()
def predict_values(model: CosmosPolicyModel, batch: TrainingBatch, seed: int = 0, num_samples: int = 1,
                   max_batch_size: int = 64, num_steps: int | None = None) -> torch.Tensor:
    """Predicted value in [0, 1] of each sample's real future state, ``(B,)`` (mean of ``num_samples`` draws);
    ``num_steps``: solver steps (None: the model's sampler; 0: one call at σ_max, as the planner judges)."""
    draws = [model.extract_value(_generate(model, batch, "value", row_seed(seed, k), max_batch_size, num_steps))
             for k in range(num_samples)]
    return torch.stack(draws).mean(0).cpu()


@torch.no_grad()
def world_model_errors(model: CosmosPolicyModel, batch: TrainingBatch, seed: int = 0,
                       max_batch_size: int = 64, num_steps: int | None = None) -> torch.Tensor:
    """Per-sample MSE ``(B,)`` between sampled and real future frames (images and proprio, latent units);
    ``num_steps`` as in :func:`predict_values`."""
    out = _generate(model, batch, "world_model", seed, max_batch_size, num_steps)
    future = list(model.layout.future_indices)
    real = batch.latents.to(out.device)[:, :, future]
    return (out[:, :, future] - real).pow(2).flatten(1).mean(1).cpu()


@torch.no_grad()
def sampled_action_l1(model: CosmosPolicyModel, batch: TrainingBatch, seed: int = 0,
                      max_batch_size: int = 64) -> torch.Tensor:
    """Per-sample mean absolute error ``(B,)`` between the sampled action chunk and the demonstrated one."""
    out = _generate(model, batch, "policy", seed, max_batch_size)
    return (model.extract_action(out).cpu() - batch.actions.cpu()).abs().flatten(1).mean(1)


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U with tied ranks averaged).

    Returns NaN when only one class is present (the AUC is undefined there, not 0.5).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # ties get their average rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
