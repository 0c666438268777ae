from dataclasses import replace

import pytest
import torch

from cosmos_policy.planner import (
    majority_mean,
    plan,
    row_seed,
    sample_chain,
    score_candidates,
    seeded_noise,
    value_of_futures,
)


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


def test_per_observation_seeds_make_each_plan_independent_of_its_batch(tiny_model, current):
    latents, text = current
    cfg = replace(tiny_model.config.planner, num_candidates=3, num_world_samples=1, num_value_samples=2)
    both = plan(tiny_model, latents, text, cfg, seed=[11, 22])
    alone = plan(tiny_model, latents[1:], text[1:], cfg, seed=[22])
    assert torch.allclose(both.candidates[1], alone.candidates[0], atol=1e-4)
    assert torch.allclose(both.values[1], alone.values[0], atol=1e-4) and both.chosen[1] == alone.chosen[0]
    other = plan(tiny_model, latents[1:], text[1:], cfg, seed=[23])
    assert not torch.allclose(other.candidates[0], alone.candidates[0])  # the seed is what sets the noise
    with pytest.raises(ValueError, match="2 seeds for 1 observations"):
        plan(tiny_model, latents[:1], text[:1], cfg, seed=[1, 2])


def test_default_planner_shapes_and_q_variant(tiny_model, current):
    latents, text = current
    out = plan(tiny_model, latents, text, tiny_model.config.planner, seed=0)  # N=8, 3 x 5
    assert out.candidates.shape == (2, 8, 16, 7) and out.values.shape == (2, 8, 15)
    assert out.num_forward_calls == 3 * 6
    assert out.actions.abs().max() <= 1.0
    q = plan(tiny_model, latents, text, replace(tiny_model.config.planner, mode="q"), seed=0)
    assert q.values.shape == (2, 8, 15) and q.num_forward_calls == 2 * 6
    assert torch.equal(q.candidates, out.candidates)  # same policy samples for the same seed


def test_scoring_given_candidates_reproduces_the_plan_and_gives_second_opinions(tiny_model, current):
    latents, text = current
    for mode in ("model_based", "q"):
        cfg = replace(tiny_model.config.planner, num_candidates=3, num_world_samples=2, num_value_samples=2, mode=mode)
        out = plan(tiny_model, latents, text, cfg, seed=[7, 8])
        values, scores = score_candidates(tiny_model, latents, text, out.candidates, cfg, seed=[7, 8])
        assert torch.allclose(values, out.values, atol=1e-5) and torch.allclose(scores, out.scores, atol=1e-5)
        again, _ = score_candidates(tiny_model, latents, text, out.candidates, cfg, seed=[9, 10])
        assert again.shape == out.values.shape and not torch.allclose(again, out.values)  # another opinion
    more, _ = score_candidates(tiny_model, latents, text, out.candidates, replace(cfg, mode="model_based",
                               num_world_samples=3, num_value_samples=1), seed=0)
    assert more.shape == (2, 3, 3)


def test_value_of_given_futures(tiny_model, current):
    latents, text = current
    a = value_of_futures(tiny_model, latents, text, 3, seeds=[1, 2])
    assert a.shape == (2, 3) and ((a >= 0) & (a <= 1)).all()
    assert torch.allclose(value_of_futures(tiny_model, latents[1:], text[1:], 3, seeds=[2]), a[1:], atol=1e-5)
    assert not torch.allclose(value_of_futures(tiny_model, latents, text, 3, seeds=[3, 4]), a)
    # Split into forwards of 2 rows: the same values (each row's noise depends on its seed only).
    assert torch.allclose(value_of_futures(tiny_model, latents, text, 3, seeds=[1, 2], max_batch_size=2), a, atol=1e-5)


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


def test_a_separate_planning_model_judges_the_policy_candidates(tiny_model, tiny_config, current):
    """The reference's planning: the policy proposes, another (refined) model predicts futures and values."""
    from cosmos_policy.latent_layout import libero_layout
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel

    latents, text = current
    cfg = replace(tiny_model.config.planner, num_candidates=3, num_world_samples=2, num_value_samples=2)
    torch.manual_seed(1)
    judge = CosmosPolicyModel(tiny_config).eval()
    alone = plan(tiny_model, latents, text, cfg, seed=5)
    paired = plan(tiny_model, latents, text, cfg, seed=5, planning_model=judge)
    judged_by_itself = plan(judge, latents, text, cfg, seed=5)
    assert torch.equal(paired.candidates, alone.candidates)  # proposals: the policy's, same seeds
    assert not torch.allclose(paired.values, alone.values)  # judged by the other model
    assert not torch.allclose(paired.candidates, judged_by_itself.candidates)
    assert paired.num_forward_calls == alone.num_forward_calls == 3 * (tiny_model.config.sampler.num_steps + 1)
    other = CosmosPolicyModel(replace(tiny_config, layout=libero_layout(chunk_size=8)))
    with pytest.raises(ValueError, match="latent layout differs"):
        plan(tiny_model, latents, text, cfg, planning_model=other)


def test_value_of_the_future_state_alone(tiny_model, current):
    """V(s′) (``value_inputs="future"``): the value ignores the current state and action, in sampling and in the loss;
    V(s, a, s′) (default) does not."""
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.samples import TrainingBatch
    from cosmos_policy.train_step import compute_loss

    latents, text = current
    lay = tiny_model.layout
    v_sprime = CosmosPolicyModel(replace(tiny_model.config, value_inputs="future")).eval()
    v_sprime.load_state_dict(tiny_model.state_dict())
    other = latents.clone()
    changed = [i for i in lay.current_indices if lay.slots[i].kind != "blank"] + [lay.action_index]
    other[:, :, changed] = torch.randn_like(other[:, :, changed])
    mask = tiny_model.condition_masks("value", len(latents))
    noise = seeded_noise(latents.shape[1:], [1, 2])
    for model, ignores in ((v_sprime, True), (tiny_model, False)):
        a, b = model.generate(latents, mask, text, noise), model.generate(other, mask, text, noise)
        assert torch.allclose(model.extract_value(a), model.extract_value(b), atol=1e-6) is ignores
        assert torch.equal(a[:, :, changed], latents[:, :, changed])  # the given frames come back as given
    batch = lambda x: TrainingBatch(x, mask.cpu(), torch.full((len(x),), 2), torch.zeros(len(x), 16, 7),  # noqa: E731
                                    torch.zeros(len(x)), ["t"] * len(x), text)
    losses = [compute_loss(v_sprime, batch(x), torch.Generator().manual_seed(0))[0] for x in (latents, other)]
    assert torch.allclose(losses[0], losses[1])
    with pytest.raises(ValueError, match="value_inputs"):
        replace(tiny_model.config, value_inputs="past")


def test_judging_stages_take_their_own_solver_steps(tiny_model, current):
    """The reference judges with one denoising step for the future and one for the value: ``0`` solver steps is a
    single network call at σ_max, the candidates keep the model's sampler."""
    latents, text = current
    cfg = replace(tiny_model.config.planner, num_candidates=3, num_world_samples=1, num_value_samples=2)
    full = plan(tiny_model, latents, text, cfg, seed=7)
    cheap = plan(tiny_model, latents, text, replace(cfg, world_model_steps=0, value_steps=0), seed=7)
    steps = tiny_model.config.sampler.num_steps
    assert full.num_forward_calls == 3 * (steps + 1)
    assert cheap.num_forward_calls == (steps + 1) + 1 + 1
    assert torch.equal(cheap.candidates, full.candidates)  # proposals unchanged
    assert not torch.allclose(cheap.values, full.values)
    mixed = plan(tiny_model, latents, text, replace(cfg, world_model_steps=2, value_steps=None), seed=7)
    assert mixed.num_forward_calls == (steps + 1) + 3 + (steps + 1)
    with pytest.raises(ValueError, match="value_steps"):
        replace(cfg, value_steps=-1)


def test_one_call_at_sigma_max_returns_the_clean_estimate(tiny_model, current):
    latents, text = current
    mask = tiny_model.condition_masks("value", latents.shape[0])
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    out = tiny_model.generate(latents, mask, text, noise, num_steps=0)
    sigma = torch.tensor(tiny_model.config.sampler.sigma_max)
    seen = tiny_model.value_view(latents, mask)
    expected = tiny_model.denoiser(noise * sigma, sigma, mask, seen, text)
    gen = ~mask[0]
    assert torch.allclose(out[:, :, gen], expected[:, :, gen], atol=1e-5)
