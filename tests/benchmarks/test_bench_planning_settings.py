"""``benchmarks/bench_planning_settings.py``: paired outcomes of planning settings read from the lake."""

import numpy as np
import pytest

from storage_schemas import EpisodeData, EpisodeMeta, LakeWriter, rollout_episode_id
from tests.fixtures.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_planning_settings")


def _episode(task: int, init: int, seed: int, success: bool, planning: bool, inference: str | None,
             label: str = "cosmos-policy/v1") -> EpisodeData:
    who = f"model{'+planning' if planning else ''}#{inference}"
    meta = EpisodeMeta(episode_id=rollout_episode_id("eval", 1, "libero_object", task, init, seed, who), source="eval",
                       suite="libero_object", task_id=task, instruction="t", dataset_id="test", iteration=1,
                       policy="model", policy_version=label, planning=planning, seed=seed, init_state_index=init,
                       success=success, inference=inference)
    return EpisodeData(meta, np.zeros((3, 9)), np.zeros((3, 7)), {})


def test_outcomes_are_paired_by_task_init_state_and_seed(tmp_path):
    bench = _bench()
    w = LakeWriter(tmp_path)
    direct = [True, False, False, True]
    n4 = [True, True, False, False]  # written before the inference column: null, the run's own setting
    n8 = [True, True, True, False]
    eps = []
    for i in range(4):
        eps += [_episode(i % 2, 40 + i, 7, direct[i], False, "k16.s4"),
                _episode(i % 2, 40 + i, 7, n4[i], True, None),
                _episode(i % 2, 40 + i, 7, n8[i], True, "k16.s4.N8W1V2.j0.0")]
    w.write_episodes(eps)
    own = "k16.s4.N4W1V2.j0.0"
    got = {name: bench.outcomes(w.layout, 1, "cosmos-policy/v1", planning, inference, default)
           for name, planning, inference, default in (("direct", False, "k16.s4", "k16.s4"),
                                                      ("n4", True, own, own),
                                                      ("n8", True, "k16.s4.N8W1V2.j0.0", own))}
    assert [got["n8"][(i % 2, 40 + i, 7)] for i in range(4)] == n8
    assert [got["n4"][(i % 2, 40 + i, 7)] for i in range(4)] == n4
    assert bench.paired(got["n8"], got["direct"]) == {"pairs": 4, "wins": 2, "losses": 1, "p": 0.5}
    assert bench.paired(got["n8"], got["n4"]) == {"pairs": 4, "wins": 1, "losses": 0, "p": 0.5}
    s = bench.summary(got["n8"])
    assert (s["successes"], s["episodes"], s["per_task"]) == (3, 4, {0: [2, 2], 1: [1, 2]})
    assert s["ci95"][0] < 0.75 < s["ci95"][1]


def test_needs_a_bench_learning_workspace(tmp_path):
    with pytest.raises(SystemExit):
        _bench().main(["--home", str(tmp_path), "--variant", "eval.num_candidates=8"])
