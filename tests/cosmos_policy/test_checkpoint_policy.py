from dataclasses import replace

import numpy as np
import pytest
import torch

from cosmos_policy.checkpoint_io import LayoutMismatchError, load_checkpoint, read_metadata, save_checkpoint
from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig, PlannerConfig, get_config
from cosmos_policy.latent_layout import libero_layout, robocasa_layout
from cosmos_policy.policy import CosmosPolicy
from sims.types import Observation, Policy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, stats):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), tiny_model, stats, extra={"step": 3})


def test_checkpoint_round_trip(checkpoint, tiny_model, stats):
    assert (checkpoint / "model.safetensors").exists()
    meta = read_metadata(checkpoint)
    assert meta["format_version"] == 1 and meta["extra"] == {"step": 3}
    assert meta["layout"]["camera_names"] == ["eye_in_hand", "agentview"]
    model, loaded = load_checkpoint(checkpoint, expected_layout=libero_layout())
    for (k, a), (_, b) in zip(tiny_model.transformer.state_dict().items(), model.transformer.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    assert np.array_equal(loaded.action.max, stats.action.max)
    assert model.config == tiny_model.config
    assert CosmosPolicyConfig.from_dict(tiny_model.config.to_dict()) == tiny_model.config


def test_checkpoint_refuses_other_layout(checkpoint):
    with pytest.raises(LayoutMismatchError, match="camera_names"):
        load_checkpoint(checkpoint, expected_layout=robocasa_layout())
    with pytest.raises(LayoutMismatchError, match="chunk_size"):
        load_checkpoint(checkpoint, expected_layout=libero_layout(chunk_size=8))


def test_config_validation_names_values():
    with pytest.raises(ValueError, match="unknown size preset 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="num_candidates must be > 0, got 0"):
        PlannerConfig(num_candidates=0)
    with pytest.raises(ValueError, match="temporal patch size 1"):
        replace(get_config("tiny").backbone, patch_size=(2, 2, 2))
    with pytest.raises(ValueError, match="image_size 64"):
        cfg = get_config("tiny")
        replace(cfg, layout=libero_layout(latent_hw=28))


def _observations(n, rng, size=96):
    return [Observation(images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                for c in ("agentview", "eye_in_hand")},
                        proprio=rng.normal(size=9).astype(np.float32)) for _ in range(n)]


def test_policy_act_direct_and_planning(checkpoint, stats):
    policy = CosmosPolicy.from_checkpoint(checkpoint, expected_layout=libero_layout(), seed=0)
    assert isinstance(policy, Policy)
    obs = _observations(2, np.random.default_rng(0))
    actions = policy.act(obs, ["task 0", "task 1"])
    assert actions.shape == (2, 16, 7) and actions.dtype == np.float32
    assert np.all(actions >= stats.action.min - 1e-5) and np.all(actions <= stats.action.max + 1e-5)
    auto = CosmosPolicy(policy.model, policy.stats, direct_mode="autoregressive").act(obs, ["task 0", "task 1"])
    assert auto.shape == (2, 16, 7)
    planner = policy.with_planning(True, num_candidates=3, num_world_samples=2, num_value_samples=2)
    planned = planner.act(obs, ["task 0", "task 1"])
    assert planned.shape == (2, 16, 7)
    chosen = planner.last_plan.chosen
    cands = stats.action.unnormalize(planner.last_plan.candidates.numpy())
    assert np.allclose(planned, cands[np.arange(2), chosen.numpy()], atol=1e-5)
    # Same seed and call count → same actions (reproducible rollouts).
    again = CosmosPolicy(policy.model, policy.stats, seed=0).act(obs, ["task 0", "task 1"])
    assert np.allclose(again, actions)
    # Keyed rows: a row's actions depend on its key only, not on the call count or the rest of the batch.
    for planning in (False, True):
        p = policy.with_planning(planning, num_candidates=2, num_world_samples=1, num_value_samples=2)
        pair = p.act(obs, ["task 0", "task 1"], keys=[5, 9])
        single = p.act(obs[1:], ["task 1"], keys=[9])
        assert np.allclose(pair[1], single[0], atol=1e-4)
        assert not np.allclose(p.act(obs[1:], ["task 1"], keys=[10])[0], single[0])
    with pytest.raises(ValueError, match="1 keys for 2 observations"):
        policy.act(obs, ["task 0", "task 1"], keys=[1])
    with pytest.raises(KeyError, match="lacks camera 'eye_in_hand'"):
        policy.act([Observation(images={"agentview": obs[0].images["agentview"]}, proprio=obs[0].proprio)],
                   ["task 0"])


def test_policy_plans_with_a_separate_planning_checkpoint(tmp_path, checkpoint, tiny_config, stats):
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.normalization import MinMax, NormalizationStats

    torch.manual_seed(2)
    judge_dir = save_checkpoint(tmp_path / "judge", CosmosPolicyModel(tiny_config), stats)
    obs = _observations(2, np.random.default_rng(0))
    kw = dict(planning=True, planner=PlannerConfig(num_candidates=3, num_world_samples=1, num_value_samples=2))
    alone = CosmosPolicy.from_checkpoint(checkpoint, **kw)
    paired = CosmosPolicy.from_checkpoint(checkpoint, planning_checkpoint=judge_dir, **kw)
    alone.act(obs, ["task 0", "task 1"])
    paired.act(obs, ["task 0", "task 1"])
    assert torch.equal(paired.last_plan.candidates, alone.last_plan.candidates)
    assert not torch.allclose(paired.last_plan.values, alone.last_plan.values)
    assert paired.with_planning(True, num_candidates=2).planning_model is paired.planning_model
    shifted = NormalizationStats(stats.proprio, MinMax(stats.action.min - 1, stats.action.max))
    other_dir = save_checkpoint(tmp_path / "other-stats", CosmosPolicyModel(tiny_config), shifted)
    with pytest.raises(ValueError, match="normalisation statistics differs"):
        CosmosPolicy.from_checkpoint(checkpoint, planning_checkpoint=other_dir, **kw)


def test_model_package_imports_no_simulator_or_orchestration():
    """``cosmos_policy`` stands alone: importing all of it pulls in neither sims nor flywheel, Ray, Prefect, MLflow."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, cosmos_policy\n"
            "for m in pkgutil.iter_modules(cosmos_policy.__path__):\n"
            "    importlib.import_module('cosmos_policy.' + m.name)\n"
            "bad = sorted({n.split('.')[0] for n in sys.modules} & {'sims', 'flywheel', 'ray', 'prefect', 'mlflow', 'tasks'})\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_simulator_observation_satisfies_the_policy_protocol():
    import numpy as np

    from cosmos_policy.observation import PolicyObservation
    from sims.types import Observation

    assert isinstance(Observation(images={}, proprio=np.zeros(9, np.float32)), PolicyObservation)
