from dataclasses import replace

import pytest
import torch

from cosmos_policy.planner import majority_mean, plan, row_seed, sample_chain, seeded_noise


def test_majority_mean_hand_made_sets():
    values = torch.tensor([
        [0.9, 0.8, 0.7, 0.0, 0.01],   # 3/5 successes → mean of successes
        [0.9, 0.02, 0.03, 0.0, 0.8],  # 2/5 → minority: failure mean or 0
        [0.06, 0.06, 0.04, 0.04],     # exactly half → success mean
    ][:2])
    assert majority_mean(values).tolist() == pytest.approx([0.8, (0.02 + 0.03 + 0.0) / 3])
    assert majority_mean(values, minority_score="zero").tolist() == pytest.approx([0.8, 0.0])
    half = torch.tensor([[0.06, 0.08, 0.04, 0.02]])
    assert majority_mean(half).item() == pytest.approx(0.07)
    fifteen = torch.tensor([[0.5] * 8 + [0.0] * 7, [0.5] * 7 + [0.01] * 8])
    assert majority_mean(fifteen).tolist() == pytest.approx([0.5, 0.01])
    with pytest.raises(ValueError, match="minority_score"):
        majority_mean(values, minority_score="max")


def test_seeded_noise_independent_of_batching():
    seeds = [row_seed(0, i) for i in range(5)]
    full = seeded_noise((3, 4), seeds)
    assert torch.equal(full[2:3], seeded_noise((3, 4), seeds[2:3]))
    assert not torch.equal(full[0], full[1])


@pytest.fixture(scope="module")
def current(tiny_model, episode_latents, stats):
    from cosmos_policy.samples import SampleSpec, build_batch

    batch = build_batch(episode_latents, [SampleSpec(0, 0, "policy"), SampleSpec(2, 16, "policy")],
                        tiny_model.layout, stats)
    return batch.latents, tiny_model.encode_text(batch.instructions)


def test_batched_planner_matches_unbatched_reference(tiny_model, current):
    latents, text = current
    cfg = replace(tiny_model.config.planner, num_candidates=4, num_world_samples=2, num_value_samples=3)
    batched = plan(tiny_model, latents[:1], text[:1], cfg, seed=3)
    # Reference: one candidate / one sample per forward.
    unbatched = plan(tiny_model, latents[:1], text[:1], replace(cfg, max_batch_size=1), seed=3)
    assert batched.num_forward_calls == 3 * (tiny_model.config.sampler.num_steps + 1)
    assert unbatched.num_forward_calls == (4 + 8 + 24) * (tiny_model.config.sampler.num_steps + 1)
    assert torch.equal(batched.chosen, unbatched.chosen)
    assert torch.allclose(batched.values, unbatched.values, atol=1e-4)
    assert torch.allclose(batched.candidates, unbatched.candidates, atol=1e-4)
    assert batched.values.shape == (1, 4, 6) and batched.scores.shape == (1, 4)
    assert torch.equal(batched.actions[0], batched.candidates[0, batched.chosen[0]])


def test_default_planner_shapes_and_q_variant(tiny_model, current):
    latents, text = current
    out = plan(tiny_model, latents, text, tiny_model.config.planner, seed=0)  # N=8, 3 x 5
    assert out.candidates.shape == (2, 8, 16, 7) and out.values.shape == (2, 8, 15)
    assert out.num_forward_calls == 3 * 6
    assert out.actions.abs().max() <= 1.0
    q = plan(tiny_model, latents, text, replace(tiny_model.config.planner, mode="q"), seed=0)
    assert q.values.shape == (2, 8, 15) and q.num_forward_calls == 2 * 6
    assert torch.equal(q.candidates, out.candidates)  # same policy samples for the same seed


def test_direct_modes(tiny_model, current):
    latents, text = current
    seeds = [1, 2]
    par = sample_chain(tiny_model, latents, text, seeds, "parallel")
    ar = sample_chain(tiny_model, latents, text, seeds, "autoregressive")
    cur = list(tiny_model.layout.current_indices)
    assert torch.equal(par[:, :, cur], latents[:, :, cur]) and torch.equal(ar[:, :, cur], latents[:, :, cur])
    assert torch.allclose(tiny_model.extract_action(ar), tiny_model.extract_action(par).clamp(-1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        sample_chain(tiny_model, latents, text, seeds, "beam")
