"""Rollout engine on Ray with a FAKE environment (unit test of scheduling, faults and lake writes)."""

import functools

from flywheel.recordings import EpisodeRequest
from storage_schemas import LakeWriter
from storage_schemas.views import connect
from tasks.rollout_engine import BehaviourSpec, RolloutEngine
from tests.fixtures.fake_env import FakeEnv


def _requests(n, **kw):
    return [EpisodeRequest("fake_suite", 0, i, seed=100 + i, iteration=1, policy="random", image_every=5, **kw) for i in range(n)]


def _lake_rows(writer):
    con = connect(writer.layout)
    return con.sql("select episode_id, success, length, error from episodes order by init_state_index").fetchall()


def test_episodes_written_with_sparse_reward_and_ids(ray_local, tmp_path):
    writer = LakeWriter(tmp_path / "lake")
    engine = RolloutEngine(ray_local, functools.partial(FakeEnv, length=12), BehaviourSpec("random"), num_workers=2)
    try:
        stats = engine.run(_requests(6), writer, dataset_id="test")
    finally:
        engine.shutdown()
    rows = _lake_rows(writer)
    assert len(rows) == 6 and stats.done == 6
    assert [r[1] for r in rows] == [True, False] * 3
    assert {r[0] for r in rows} == {r.episode_id for r in _requests(6)}
    con = connect(writer.layout)
    rewards = con.sql("select sum(reward), count(*) from steps").fetchall()[0]
    assert rewards == (3.0, 72)
    assert len(writer.layout.parts("episodes")) == 1  # compacted after the run


def test_killed_worker_is_restarted_and_episode_counted_once(ray_local, tmp_path):
    writer = LakeWriter(tmp_path / "lake")
    engine = RolloutEngine(ray_local, functools.partial(FakeEnv, length=400), BehaviourSpec("random"), num_workers=2)
    engine.wait_ready()
    killed = []

    def kill_once(n, worker):
        if n == 4 and not killed:
            ray_local.kill(worker, no_restart=False)
            killed.append(worker)

    try:
        stats = engine.run(_requests(8), writer, dataset_id="test", on_submit=kill_once)
    finally:
        engine.shutdown()
    rows = _lake_rows(writer)
    assert killed and stats.retries >= 1 and stats.worker_restarts >= 1
    assert len(rows) == 8 and len({r[0] for r in rows}) == 8
    assert all(r[3] is None for r in rows) and all(r[2] == 400 for r in rows)


def test_hard_abort_is_retried_and_raising_episode_recorded(ray_local, tmp_path):
    writer = LakeWriter(tmp_path / "lake")
    marker = str(tmp_path / "aborted-once")
    factory = functools.partial(FakeEnv, length=10, crash_on_init=2, abort_on_init=3, abort_marker=marker)
    engine = RolloutEngine(ray_local, factory, BehaviourSpec("random"), num_workers=2)
    try:
        stats = engine.run(_requests(5), writer, dataset_id="test")
    finally:
        engine.shutdown()
    rows = {r[0]: r for r in _lake_rows(writer)}
    reqs = _requests(5)
    assert len(rows) == 5
    crashed = rows[reqs[2].episode_id]
    assert crashed[1] is False and "fake simulator error" in crashed[3]
    assert rows[reqs[3].episode_id][3] is None  # the retry after the abort succeeded
    assert stats.retries >= 1 and stats.errors == 1


def test_duplicate_requests_refused(ray_local):
    import pytest

    engine = RolloutEngine(ray_local, functools.partial(FakeEnv), BehaviourSpec("random"), num_workers=1)
    try:
        with pytest.raises(ValueError, match="duplicate"):
            engine.run(_requests(2) * 2, None, dataset_id="x")
    finally:
        engine.shutdown()


class CountingPolicy:
    """A FAKE policy for engine tests: constant small actions, records its batch sizes and query keys."""

    requires_images = True
    accepts_episode_keys = True

    def __init__(self):
        self.batches, self.keys = [], []

    def act(self, observations, instructions, keys=None):
        import numpy as np

        assert all(o.images for o in observations), "query observations must carry images"
        self.batches.append(len(observations))
        self.keys.extend(keys or [])
        return np.full((len(observations), 4, 7), 0.1, np.float32)


class KeyLog:
    """Picklable factory of one CountingPolicy whose keys the test reads back (driver placement only)."""

    def __init__(self):
        self.policy = CountingPolicy()

    def __call__(self):
        return self.policy


def test_batched_policy_driver_and_actor(ray_local, tmp_path):
    from tasks.batched_rollouts import PolicyHandle, run_batched

    for placement in ("driver", "actor"):
        writer = LakeWriter(tmp_path / placement)
        engine = RolloutEngine(ray_local, functools.partial(FakeEnv, length=10), BehaviourSpec("external"), num_workers=2)
        handle = PolicyHandle(ray_local, CountingPolicy, placement)
        try:
            stats = run_batched(engine, handle, _requests(4), writer, dataset_id="t", lockstep=True)
        finally:
            engine.shutdown()
            handle.close()
        rows = _lake_rows(writer)
        assert len(rows) == 4 and stats.done == 4
        assert [r[1] for r in rows] == [True, False, True, False] and all(r[2] == 10 for r in rows)
        assert max(handle.batch_sizes) == 2  # both workers' observations in one call
        assert handle.calls == 2 * 3  # two rounds of episodes, ceil(10 / 4) chunks each


def test_ready_first_queries_key_each_episode_by_itself(ray_local, tmp_path):
    """Ready-first or lockstep, 1 or 2 workers: every episode's queries carry the same keys (its own)."""
    from tasks.batched_rollouts import PolicyHandle, query_key, run_batched

    reqs = _requests(4)
    expected = sorted(query_key(r, q) for r in reqs for q in range(3))  # ceil(10 / 4) queries per episode
    for workers, lockstep in ((2, False), (1, True)):
        engine = RolloutEngine(ray_local, functools.partial(FakeEnv, length=10), BehaviourSpec("external"),
                               num_workers=workers)
        log = KeyLog()
        handle = PolicyHandle(ray_local, log, "driver")
        try:
            stats = run_batched(engine, handle, reqs, LakeWriter(tmp_path / f"{workers}"), dataset_id="t",
                                lockstep=lockstep)
        finally:
            engine.shutdown()
        assert stats.done == 4 and sorted(log.policy.keys) == expected
        assert sum(handle.batch_sizes) == 4 * 3


def test_batched_rollouts_can_execute_part_of_each_chunk(ray_local, tmp_path):
    from tasks.batched_rollouts import PolicyHandle, run_batched

    engine = RolloutEngine(ray_local, functools.partial(FakeEnv, length=10), BehaviourSpec("external"), num_workers=2)
    handle = PolicyHandle(ray_local, CountingPolicy, "driver")
    try:
        stats = run_batched(engine, handle, _requests(2), LakeWriter(tmp_path / "lake"), dataset_id="t",
                            execute_actions=2)
    finally:
        engine.shutdown()
    assert stats.done == 2 and sum(handle.batch_sizes) == 2 * 5  # ceil(10 / 2) queries per episode


def test_batched_worker_abort_is_retried_and_raising_episode_recorded(ray_local, tmp_path):
    from tasks.batched_rollouts import PolicyHandle, run_batched

    writer = LakeWriter(tmp_path / "lake")
    factory = functools.partial(FakeEnv, length=10, crash_on_init=2, abort_on_init=3, abort_marker=str(tmp_path / "once"))
    engine = RolloutEngine(ray_local, factory, BehaviourSpec("external"), num_workers=2)
    handle = PolicyHandle(ray_local, CountingPolicy, "driver")
    try:
        stats = run_batched(engine, handle, _requests(5), writer, dataset_id="t")
    finally:
        engine.shutdown()
    rows = {r[0]: r for r in _lake_rows(writer)}
    reqs = _requests(5)
    assert len(rows) == 5 and stats.retries >= 1 and stats.worker_restarts >= 1
    assert "fake simulator error" in rows[reqs[2].episode_id][3]
    assert rows[reqs[3].episode_id][3] is None and rows[reqs[3].episode_id][2] == 10
