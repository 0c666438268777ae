"""``benchmarks/bench_judge.py``: within-state judge metrics, branching by replay, observed-future latents."""

import numpy as np
import pytest

from sims.types import Observation, StepResult, TaskSpec
from tests.fixtures.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_judge")


def test_judge_metrics_on_hand_made_states():
    bench = _bench()
    success = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    perfect = bench.judge_metrics(success, success + 0.01 * np.arange(3))
    assert perfect["choice"] == perfect["oracle"] == pytest.approx(2 / 3, abs=1e-4)
    assert perfect["random"] == pytest.approx(success.mean(), abs=1e-4) and perfect["concordance"] == 1.0
    assert perfect["pairs"] == 3 + 0 + 2  # state 2 has two equal candidates: that pair does not count
    inverted = bench.judge_metrics(success, -success)
    assert inverted["choice"] == 0.0 and inverted["concordance"] == 0.0
    flat = bench.judge_metrics(success, np.zeros_like(success))
    assert flat["concordance"] == 0.5 and flat["choice"] == pytest.approx(1 / 3, abs=1e-4)  # ties: first candidate
    assert bench.judge_metrics(np.zeros((2, 2)), np.ones((2, 2)))["concordance"] is None
    with pytest.raises(ValueError, match="states, candidates"):
        bench.judge_metrics(success, success[:, :2])


def test_retest_agreement():
    bench = _bench()
    a = np.array([[0.1, 0.5, 0.2], [0.3, 0.2, 0.1]])
    assert bench.retest(a, a + 1.0) == {"same_pick": 1.0, "within_state_corr": 1.0}
    r = bench.retest(a, -a)
    assert r["same_pick"] == 0.0 and r["within_state_corr"] == -1.0


class FakeLineEnv:
    """Fake environment for unit tests: a point on a line, success when it reaches 10; one image of its position."""

    action_dim = 1

    def __init__(self, max_steps: int = 12) -> None:
        self.max_steps, self.x, self.t, self.resets = max_steps, 0.0, 0, 0

    def task_spec(self, task_id):
        return TaskSpec("fake", task_id, "go right", self.max_steps, 1)

    def reset(self, task_id, init_state_index, seed):
        self.x, self.t, self.resets = float(init_state_index), 0, self.resets + 1
        return Observation({}, np.array([self.x], np.float32))

    def step(self, action, render=True):
        self.x += float(np.asarray(action).reshape(-1)[0])
        self.t += 1
        ok = self.x >= 10
        return StepResult(Observation({}, np.array([self.x], np.float32)), ok or self.t >= self.max_steps, ok)

    def render(self):
        return {"cam": np.full((2, 2, 3), int(self.x), np.uint8)}


class FakeStepPolicy:
    """Fake policy for unit tests: chunks of +1 steps; records what it saw (image value, key)."""

    def __init__(self):
        self.seen = []

    def act(self, observations, instructions, keys):
        self.seen.append((float(observations[0].images["cam"][0, 0, 0]), keys[0]))
        return np.ones((1, 4, 1), np.float32)


def test_branches_replay_the_prefix_and_continuations_run_the_candidate_then_the_policy():
    bench = _bench()
    env, policy = FakeLineEnv(), FakeStepPolicy()
    branches = bench.branch_states(env, policy, [(0, 0, 5)], [1, 2], 2, lambda key, q: 2 * q)  # steps of 1.0
    assert [b.query for b in branches] == [1, 2]
    assert np.array_equal(branches[1].prefix, np.ones((4, 1)))  # two queries x two executed actions
    assert [x for x, _ in policy.seen] == [0.0, 2.0, 4.0]  # the policy sees rendered images of the real state
    assert [k for _, k in policy.seen] == [0, 2, 4]  # the evaluation's noise keys
    b = branches[1]
    # From x=4 at t=4, two actions of the candidate, then the policy's +1 steps until success (x >= 10) or t = 12.
    assert bench.continue_after(env, FakeStepPolicy(), b, np.full((4, 1), 3.0), 2, seed=1)  # x=10 inside the chunk
    assert bench.continue_after(env, FakeStepPolicy(), b, np.zeros((4, 1)), 2, seed=1)  # x=10 at t=12
    later = FakeStepPolicy()
    assert not bench.continue_after(env, later, b, -np.ones((4, 1)), 2, seed=1)  # x=8 at t=12
    from cosmos_policy.planner import row_seed

    assert later.seen == [(2.0, row_seed(1, 3)), (4.0, row_seed(1, 4)), (6.0, row_seed(1, 5))]
    resets = env.resets
    obs = bench.observed_future(env, b, np.full((4, 1), 1.0))
    assert env.resets == resets + 1 and obs.images["cam"][0, 0, 0] == 8  # x = 4 + 4 after the whole chunk
    with pytest.raises(RuntimeError, match="ended inside its branch prefix"):
        bench.replay(env, (0, 9, 0), np.ones((3, 1)))
