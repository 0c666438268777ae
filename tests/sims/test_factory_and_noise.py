"""make_env selection, suite constants and expert noise (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from sims.expert import NoiseConfig, goal_supported
from sims.factory import make_env, valid_suites
from sims.libero_runtime import LIBERO_MAX_STEPS


def test_unknown_suite_names_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        make_env("mujoco_soccer")
    msg = str(info.value)
    assert "mujoco_soccer" in msg
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "robocasa_fixture"):
        assert suite in msg
    assert set(LIBERO_MAX_STEPS) <= set(valid_suites())


def test_step_limits_follow_the_paper() -> None:
    assert [LIBERO_MAX_STEPS[s] for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == [
        220,
        280,
        300,
        520,
    ]


def test_make_env_libero_is_lazy_and_validates() -> None:
    env = make_env("libero_object", image_size=32)  # no scene is built before reset()
    assert env.camera_names == ("agentview", "eye_in_hand")
    assert (env.action_dim, env.proprio_dim) == (7, 9)
    with pytest.raises(ValueError):
        make_env("libero_object", image_size=0)


def test_goal_support() -> None:
    assert goal_supported((("in", "ketchup_1", "basket_1_contain_region"),))
    assert goal_supported((("on", "akita_black_bowl_1", "plate_1"),), {"akita_black_bowl_1"})
    assert not goal_supported((("open", "wooden_cabinet_1_middle_region"),))
    assert goal_supported((("turnon", "flat_stove_1"), ("on", "moka_pot_1", "flat_stove_1_cook_region")))
    assert not goal_supported((("on", "plate_1", "x"),), {"bowl"})


def test_noise_config_validates() -> None:
    assert not NoiseConfig().active
    assert NoiseConfig(action_noise=0.1).active
    with pytest.raises(ValueError):
        NoiseConfig(action_noise=-1)
    with pytest.raises(ValueError):
        NoiseConfig(perturb_steps=0)


def test_import_sims_has_no_heavy_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sims, sims.types, sims.factory, sims.expert, sims.demos;"
        "bad=[m for m in ('libero','robosuite','mujoco','robocasa','prefect','ray','mlflow') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert np.__name__ == "numpy"
