"""record_episode against a tiny fake environment (no simulator)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from sims.demos import record_episode
from sims.types import Env, Observation, Policy, StepResult, TaskSpec


class LineEnv:
    """1-D toy: proprio x moves by action[0]; success when x >= goal. Counts renders."""

    camera_names = ("agentview", "eye_in_hand")
    action_dim = 2
    proprio_dim = 1

    def __init__(self, goal: float = 1.0, max_steps: int = 20) -> None:
        self.goal, self.max_steps = goal, max_steps
        self.x, self.t, self.renders = 0.0, 0, 0

    def task_spec(self, task_id: int) -> TaskSpec:
        return TaskSpec("toy", task_id, "walk right", self.max_steps, 3)

    def render(self) -> Mapping[str, np.ndarray]:
        self.renders += 1
        v = np.uint8(min(255, int(self.x * 100)))
        return {c: np.full((4, 4, 3), v, np.uint8) for c in self.camera_names}

    def _obs(self, render: bool) -> Observation:
        return Observation(
            self.render() if render else {}, np.array([self.x], np.float32), np.array([self.t], np.float32)
        )

    def reset(self, task_id: int, init_state_index: int, seed: int) -> Observation:
        self.x, self.t = 0.0, 0
        return self._obs(True)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        self.x += float(action[0])
        self.t += 1
        success = self.x >= self.goal
        return StepResult(self._obs(render), success or self.t >= self.max_steps, success)

    def close(self) -> None:
        pass


class ConstPolicy:
    requires_images = False
    name = "const"

    def __init__(self, step: float, k: int = 1) -> None:
        self.step, self.k = step, k

    def act(self, observations: Sequence[Observation], instructions: Sequence[str]) -> np.ndarray:
        return np.tile(np.array([self.step, 0.0], np.float32), (len(observations), self.k, 1))


def test_protocols_are_satisfied() -> None:
    assert isinstance(LineEnv(), Env)
    assert isinstance(ConstPolicy(0.1), Policy)


class RewindLineEnv(LineEnv):
    """LineEnv that can snapshot its state and render a past one (like LiberoEnv)."""

    def save_state(self) -> tuple[float, int]:
        return self.x, self.t

    def render_state(self, state: tuple[float, int]) -> Mapping[str, np.ndarray]:
        now = (self.x, self.t)
        self.x, self.t = state
        try:
            return self.render()
        finally:
            self.x, self.t = now


class StepBoom(LineEnv):
    """Raises inside ``step`` once ``t`` reaches ``at`` (after the observation was taken)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        if self.t >= self.at:
            raise RuntimeError("physics exploded")
        return super().step(action, render)


def _image_value(x: float) -> int:
    return min(255, int(np.float32(x) * 100))


@pytest.mark.parametrize("env_cls", [LineEnv, RewindLineEnv])
def test_record_success_shapes_and_image_steps(env_cls: type[LineEnv]) -> None:
    env = env_cls(goal=1.0)
    rec = record_episode(env, ConstPolicy(0.1), 0, 1, seed=3, image_every=4)
    assert rec.success and rec.error is None
    assert rec.length == 10  # float32(0.1) * 10 > 1.0
    assert rec.actions.shape == (10, 2) and rec.actions.dtype == np.float32
    assert rec.proprio.shape == (10, 1)
    np.testing.assert_allclose(rec.proprio[:, 0], np.arange(10) * 0.1, atol=1e-5)  # obs *before* each action
    assert rec.object_state is not None and rec.object_state.shape == (10, 1)
    # every 4th row plus the last row T-1 (the observation before the final action); none at T
    assert rec.image_steps.tolist() == [0, 4, 8, 9]
    assert rec.images["agentview"].shape == (4, 4, 4, 3)
    for i, t in enumerate(rec.image_steps):  # each image shows its row's observation
        assert rec.images["agentview"][i, 0, 0, 0] == _image_value(rec.proprio[t, 0]), t
        assert rec.images["eye_in_hand"][i, 0, 0, 0] == _image_value(rec.proprio[t, 0]), t
    assert rec.final_proprio is not None and rec.final_proprio[0] >= 1.0
    assert set(rec.final_images) == set(env.camera_names)
    assert rec.final_images["agentview"][0, 0, 0] == _image_value(rec.final_proprio[0])
    assert rec.policy_name == "const" and rec.task.instruction == "walk right"


def test_rewindable_env_renders_only_image_rows() -> None:
    env = RewindLineEnv(goal=1.0)
    record_episode(env, ConstPolicy(0.1), 0, 1, seed=3, image_every=4)
    assert env.renders == 5  # rows 0, 4, 8, the final observation, and row 9 rendered after the fact
    plain = LineEnv(goal=1.0)
    record_episode(plain, ConstPolicy(0.1), 0, 1, seed=3, image_every=4)
    assert plain.renders == 11  # no rewind: every row plus the final observation


def test_step_limit_last_row_has_image() -> None:
    env = RewindLineEnv(goal=100.0, max_steps=7)
    rec = record_episode(env, ConstPolicy(0.1, k=3), 0, 0, seed=0, image_every=4)
    assert not rec.success and rec.length == 7
    assert rec.image_steps.tolist() == [0, 4, 6]
    assert env.renders == 4  # 0, 4, 6 (known ahead from max_steps) and the final observation


def test_record_failure_at_step_limit_without_images() -> None:
    env = LineEnv(goal=100.0, max_steps=7)
    rec = record_episode(env, ConstPolicy(0.1, k=3), 0, 0, seed=0, image_every=0)
    assert not rec.success and rec.length == 7
    assert rec.image_steps.size == 0 and env.renders == 1  # only reset's observation
    assert rec.final_images == {}


@pytest.mark.parametrize("at", [0, 4, 5])
def test_raising_step_keeps_arrays_aligned(at: int) -> None:
    rec = record_episode(StepBoom(at), ConstPolicy(0.1), 0, 0, seed=0, image_every=4)
    assert not rec.success and rec.error is not None and "physics exploded" in rec.error
    assert rec.length == at == len(rec.actions) == len(rec.proprio)
    assert rec.object_state is not None and len(rec.object_state) == at
    assert all(t < at for t in rec.image_steps.tolist())  # the failed row's image has no row: dropped
    assert rec.images["agentview"].shape[0] == len(rec.image_steps)
    assert rec.final_images == {}


def test_crash_is_recorded_not_raised() -> None:
    class Boom(ConstPolicy):
        def act(self, observations: Sequence[Observation], instructions: Sequence[str]) -> np.ndarray:
            raise RuntimeError("kaput")

    rec = record_episode(LineEnv(), Boom(0.1), 0, 0, seed=0)
    assert not rec.success and rec.error is not None and "kaput" in rec.error


def test_negative_stride_rejected() -> None:
    with pytest.raises(ValueError):
        record_episode(LineEnv(), ConstPolicy(0.1), 0, 0, seed=0, image_every=-1)
