import numpy as np
import pytest
import torch

from cosmos_policy.latent_layout import extract, libero_layout
from cosmos_policy.samples import (
    SampleSpec,
    build_batch,
    compose_batch_specs,
    future_step,
    sample_index,
    valid_steps,
    value_target,
)


def test_future_step_and_value_targets():
    assert future_step(0, 16, 40) == 16
    assert future_step(32, 16, 40) == 39
    assert value_target(39, 40, True, 0.99) == pytest.approx(1.0)
    assert value_target(16, 40, True, 0.99) == pytest.approx(2 * 0.99**23 - 1)
    assert value_target(16, 40, False) == -1.0


def test_valid_steps_need_images_at_t_and_t_prime(episode_latents):
    ep = episode_latents[0]  # length 40, images at 0, 16, 32, 39
    assert ep.image_steps.tolist() == [0, 16, 32, 39]
    assert valid_steps(ep, 16).tolist() == [0, 16, 32]
    ep2 = episode_latents[1]  # length 48, images at 0, 16, 32, 47
    assert valid_steps(ep2, 16).tolist() == [0, 16, 32]
    assert valid_steps(ep2, 8).tolist() == []  # 0 + 8 has no image


def test_encode_once_and_cache_dtype(episode_latents, tiny_config):
    ep = episode_latents[0]
    assert set(ep.latents) == set(tiny_config.layout.camera_names)
    assert ep.latents["agentview"].shape == (4, 16, 8, 8) and ep.latents["agentview"].dtype == np.float16


@pytest.mark.parametrize("fractions,expected", [((0.5, 0.25, 0.25), (8, 4, 4)), ((0.1, 0.45, 0.45), (2, 7, 7))])
def test_batch_composition_fractions(episode_latents, fractions, expected):
    rng = np.random.default_rng(0)
    specs = compose_batch_specs(episode_latents, 16, fractions, 16, rng)
    counts = tuple(sum(s.sample_type == t for s in specs) for t in ("policy", "world_model", "value"))
    assert counts == expected
    for s in specs:
        assert episode_latents[s.episode].is_demo == (s.sample_type == "policy")


def test_demo_only_pool_feeds_all_types(episode_latents):
    demos = [e for e in episode_latents if e.is_demo]
    specs = compose_batch_specs(demos, 8, (0.5, 0.25, 0.25), 16, np.random.default_rng(0))
    assert {s.sample_type for s in specs} == {"policy", "world_model", "value"}
    with pytest.raises(ValueError, match="fractions"):
        from cosmos_policy.configuration_cosmos_policy import TrainConfig

        TrainConfig(fractions=(0.5, 0.5, 0.5))


def test_build_batch_injects_targets(episode_latents, stats, tiny_config):
    lay = tiny_config.layout
    specs = [SampleSpec(0, 32, "policy"), SampleSpec(2, 16, "world_model"), SampleSpec(3, 0, "value")]
    batch = build_batch(episode_latents, specs, lay, stats)
    assert batch.latents.shape == (3, 16, 9, 8, 8)
    assert batch.cond_mask.tolist()[0] == lay.condition_mask("policy").tolist()
    assert batch.sample_type.tolist() == [0, 1, 2]
    ep = episode_latents[0]
    # action chunk past the end repeats the last action; extraction recovers the normalised chunk exactly
    want = stats.action.normalize(ep.actions[np.minimum(np.arange(32, 48), 39)])
    got = extract(batch.latents[0:1, :, lay.action_index], lay.action_numel).reshape(16, 7)
    assert torch.allclose(got, torch.from_numpy(want), atol=1e-6)
    assert batch.values[0].item() == pytest.approx(1.0)  # t' = 39 = T-1 of a success
    assert batch.values[2].item() == -1.0  # episode 3 failed
    fut = extract(batch.latents[0:1, :, lay.index("future_proprio")], 9)[0]
    assert torch.allclose(fut, torch.from_numpy(stats.proprio.normalize(ep.proprio[39])), atol=1e-6)
    cam = torch.from_numpy(episode_latents[2].latents["agentview"][1].astype(np.float32))  # image step 16
    assert torch.equal(batch.latents[1, :, lay.camera_index("agentview")], cam)
    assert len(sample_index(episode_latents, 16)) == 3 + 3 + 4 + 4


def test_policy_samples_learn_the_expert_labels_world_model_samples_the_executed_actions(tiny_config, tokenizer):
    from dataclasses import replace

    from cosmos_policy.normalization import compute_stats
    from cosmos_policy.samples import encode_episode
    from tests.cosmos_policy.conftest import make_episode

    lay = tiny_config.layout
    ep = make_episode(lay, np.random.default_rng(2))
    labels = np.clip(ep.actions + 0.3, -1, 1).astype(np.float32)
    lat = encode_episode(tokenizer, replace(ep, expert_actions=labels))
    st = compute_stats([ep.proprio], [ep.actions])
    batch = build_batch([lat], [SampleSpec(0, 0, "policy"), SampleSpec(0, 0, "world_model")], lay, st)
    k = lay.chunk_size
    assert torch.allclose(batch.actions[0], torch.from_numpy(st.action.normalize(labels[:k])), atol=1e-6)
    assert torch.allclose(batch.actions[1], torch.from_numpy(st.action.normalize(ep.actions[:k])), atol=1e-6)
    clean = build_batch([encode_episode(tokenizer, ep)], [SampleSpec(0, 0, "policy")], lay, st)
    assert torch.allclose(clean.actions[0], batch.actions[1])  # without labels, the executed actions


def test_object_state_slot_is_opt_in(tiny_config, tokenizer):
    from cosmos_policy.normalization import compute_stats
    from cosmos_policy.samples import encode_episode
    from tests.cosmos_policy.conftest import make_episode

    lay = libero_layout(object_state_dim=5)
    ep = make_episode(lay, np.random.default_rng(1))
    lat = encode_episode(tokenizer, ep)
    st = compute_stats([ep.proprio], [ep.actions], [ep.object_state])
    batch = build_batch([lat], [SampleSpec(0, 0, "policy")], lay, st)
    obj = extract(batch.latents[:, :, lay.index("object_state")], 5)
    assert torch.allclose(obj[0], torch.from_numpy(st.object_state.normalize(ep.object_state[0])), atol=1e-6)
    assert batch.cond_mask[0, lay.index("object_state")]
