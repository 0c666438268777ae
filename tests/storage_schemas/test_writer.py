import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage_schemas import EpisodeData, EpisodeMeta, LakeError, LakeWriter, rollout_episode_id
from storage_schemas.records import decode_png, encode_png
from storage_schemas.stats import mcnemar_exact, wilson_interval
from storage_schemas.views import connect, run_reports


def make_episode(i: int, T: int = 12, success: bool = True, suite: str = "libero_object", adim: int = 7,
                 source: str = "rollout", iteration: int = 1, images: bool = True) -> EpisodeData:
    rng = np.random.default_rng(i)
    meta = EpisodeMeta(episode_id=rollout_episode_id(source, iteration, suite, i % 3, i, 0), source=source, suite=suite,
                       task_id=i % 3, instruction=f"task {i % 3}", dataset_id="test", iteration=iteration, success=success)
    imgs = {"agentview": {0: rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), T - 1: rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)}} if images else {}
    return EpisodeData(meta, rng.standard_normal((T, 9)), rng.standard_normal((T, adim)), imgs)


def counts(writer):
    con = connect(writer.layout)
    return con.sql("select count(*) from episodes").fetchall()[0][0], con.sql("select count(*) from steps").fetchall()[0][0]


def test_write_and_read_back_exact(tmp_path):
    w = LakeWriter(tmp_path)
    eps = [make_episode(i, T=5 + i) for i in range(4)]
    w.write_episodes(eps)
    con = connect(w.layout)
    assert counts(w) == (4, sum(5 + i for i in range(4)))
    row = con.sql(f"select proprio, action, value_target, done, reward, images from steps where episode_id='{eps[2].meta.episode_id}' order by t").fetchall()
    np.testing.assert_allclose(np.array([r[0] for r in row]), eps[2].proprio, rtol=0, atol=0)
    np.testing.assert_allclose(np.array([r[1] for r in row]), eps[2].actions, rtol=0, atol=0)
    assert [r[3] for r in row] == [False] * 6 + [True]
    assert row[-1][4] == 1.0 and row[-1][2] == 1.0
    assert row[0][2] == pytest.approx(0.99 ** 6)
    first_img = dict(row[0][5])["agentview"]
    np.testing.assert_array_equal(decode_png(first_img), eps[2].images["agentview"][0])
    assert row[1][5] is None


def test_rewrite_is_idempotent_and_replaces(tmp_path):
    w = LakeWriter(tmp_path)
    eps = [make_episode(i) for i in range(6)]
    w.write_episodes(eps)
    report = w.write_episodes(eps[2:4])  # same ids again, smaller batch
    assert report.replaced == 2
    assert counts(w) == (6, 6 * 12)
    changed = make_episode(3, T=20)
    w.write_episodes([changed])
    assert counts(w) == (6, 5 * 12 + 20)
    con = connect(w.layout)
    assert con.sql("select count(distinct episode_id) from steps").fetchall()[0][0] == 6


def test_failure_value_targets_and_partitions(tmp_path):
    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(0, success=False), make_episode(1, suite="libero_goal", iteration=2)])
    con = connect(w.layout)
    assert con.sql("select max(value_target) from steps where episode_id in (select episode_id from episodes where not success)").fetchall()[0][0] == 0.0
    parts = {p.relative_to(tmp_path).parts[:4] for p in w.layout.parts("episodes")}
    assert ("episodes", "source=rollout", "iteration=1", "suite=libero_object") in parts
    assert ("episodes", "source=rollout", "iteration=2", "suite=libero_goal") in parts


def test_dimension_mismatch_is_refused_and_nothing_written(tmp_path):
    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(0)])
    before = sorted(os.listdir(w.layout.partition_dir("episodes", {"source": "rollout", "iteration": 1, "suite": "libero_object"})))
    with pytest.raises(LakeError, match="action_dim=8"):
        w.write_episodes([make_episode(5), make_episode(6, adim=8)])
    assert counts(w) == (1, 12)
    after = sorted(os.listdir(w.layout.partition_dir("episodes", {"source": "rollout", "iteration": 1, "suite": "libero_object"})))
    assert before == after


def test_crash_after_journal_rolls_forward(tmp_path):
    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(i) for i in range(3)])
    # Simulate a crash in the middle of a replacement commit: temp files + journal exist, renames not done.
    ep = make_episode(1, T=30)
    w._apply = lambda ops: (w.layout.journal_dir.mkdir(parents=True, exist_ok=True),
                            (w.layout.journal_dir / "crash.json").write_text(json.dumps(ops)))
    w.write_episodes([ep])
    assert counts(w) == (3, 36)  # nothing visible yet
    LakeWriter(tmp_path)  # next writer recovers
    assert counts(w) == (3, 24 + 30)
    assert not list(w.layout.journal_dir.glob("*.json"))


def test_compact_merges_parts_without_changing_rows(tmp_path):
    w = LakeWriter(tmp_path)
    for i in range(5):
        w.write_episodes([make_episode(i)])
    assert len(w.layout.parts("episodes")) == 5
    assert w.compact() == 1
    assert len(w.layout.parts("episodes")) == 1 and len(w.layout.parts("steps")) == 1
    assert counts(w) == (5, 60)
    w.write_episodes([make_episode(2)])  # still idempotent after compaction
    assert counts(w) == (5, 60)


def test_schema_version_in_files(tmp_path):
    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(0)])
    meta = pq.read_schema(w.layout.parts("steps")[0]).metadata
    assert meta[b"flywheel.schema_version"] == b"1"


def test_reports_wilson_matches_python(tmp_path):
    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(i, success=i % 3 != 0) for i in range(9)])
    (rep, table), _ = run_reports(connect(w.layout))
    rows = table.to_pylist()
    assert sum(r["n"] for r in rows) == 9
    for r in rows:
        lo, hi = wilson_interval(r["n_success"], r["n"])
        assert r["ci95_low"] == pytest.approx(lo, abs=1e-4) and r["ci95_high"] == pytest.approx(hi, abs=1e-4)


def test_success_report_never_pools_two_systems(tmp_path):
    w = LakeWriter(tmp_path)
    eps = []
    for version, inference, ok in (("m/v1", "k8.s4", True), ("m/v2", "k8.s4", False), ("m/v2", "k8.s4", False),
                                   ("m/v2", "k8.s2", True)):
        who = f"model@{version}#{inference}"
        meta = EpisodeMeta(episode_id=rollout_episode_id("eval", 1, "libero_object", 0, len(eps), 0, who), source="eval",
                           suite="libero_object", task_id=0, instruction="t", dataset_id="test", iteration=1,
                           policy="model", policy_version=version, success=ok, inference=inference)
        eps.append(EpisodeData(meta, np.zeros((3, 9)), np.zeros((3, 7)), {}))
    w.write_episodes(eps)
    (_, table), _ = run_reports(connect(w.layout))
    rows = [(r["policy_version"], r["inference"], r["n"], r["n_success"]) for r in table.to_pylist()]
    assert rows == [("m/v1", "k8.s4", 1, 1), ("m/v2", "k8.s2", 1, 1), ("m/v2", "k8.s4", 2, 0)]


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_empty_lake_views_bind(tmp_path):
    con = connect(LakeWriter(tmp_path).layout)
    assert con.sql("select count(*) from episodes").fetchall()[0][0] == 0
    assert "success" in [c[0] for c in con.sql("select * from episodes").description]


def test_png_roundtrip():
    img = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(img)), img)
    with pytest.raises(ValueError):
        encode_png(img.astype(np.float32))


def test_expert_actions_round_trip_and_older_files_read_null(tmp_path):
    """``expert_action`` holds a perturbed demo's labels; episodes without it, and files written before the column
    existed, read as null."""
    from dataclasses import replace

    w = LakeWriter(tmp_path)
    labelled = make_episode(0, T=6)
    labelled = replace(labelled, expert_actions=labelled.actions + 0.5)
    w.write_episodes([labelled, make_episode(1, T=4)])
    con = connect(w.layout)
    rows = con.sql("select episode_id, count(expert_action) from steps group by 1 order by 2").fetchall()
    assert [n for _, n in rows] == [0, 6]
    got = con.sql(f"select expert_action from steps where episode_id = '{labelled.meta.episode_id}' order by t").fetchall()
    np.testing.assert_allclose(np.array([r[0] for r in got]), labelled.actions + 0.5, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expert_actions"):
        replace(make_episode(2), expert_actions=np.zeros((3, 7)))
    for f in (tmp_path / "steps").rglob("*.parquet"):  # what a lake written before the column looks like
        pq.write_table(pq.read_table(f).drop_columns(["expert_action"]), f)
    con = connect(w.layout)
    assert con.sql("select count(*), count(expert_action), any_value(typeof(expert_action)) from steps").fetchall() == [
        (10, 0, "FLOAT[]")]


def test_wilson_interval_contains_the_observed_rate():
    # At k = 0 or k = n the bound equals p only up to rounding; a bound past p made the report's error bars
    # negative (matplotlib refused them and the cycle's report stage failed after a 75-minute run).
    for n in (1, 2, 3, 7, 10, 20, 49, 100, 1000):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_inference_settings_round_trip_and_older_files_compact(tmp_path):
    """Episodes record a model's inference settings (null for demos and experts, and in files written before the
    column existed); compaction merges old and new files."""
    from dataclasses import replace

    w = LakeWriter(tmp_path)
    w.write_episodes([make_episode(0)])
    for f in (tmp_path / "episodes").rglob("*.parquet"):  # a file written before the column existed
        pq.write_table(pq.read_table(f).drop_columns(["inference"]), f)
    tagged = make_episode(1)
    w.write_episodes([replace(tagged, meta=replace(tagged.meta, inference="k16.s4.N8W1V2.j0.0"))])
    con = connect(w.layout)
    assert con.sql("select inference from episodes order by episode_id").fetchall() in (
        [(None,), ("k16.s4.N8W1V2.j0.0",)], [("k16.s4.N8W1V2.j0.0",), (None,)])
    assert w.compact() == 1
    assert sorted(connect(w.layout).sql("select coalesce(inference, '-') from episodes").fetchall()) == [
        ("-",), ("k16.s4.N8W1V2.j0.0",)]


def test_mcnemar_exact_is_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_exact(9, 6) == pytest.approx(sum(math.comb(15, k) for k in range(9, 16)) / 2 ** 15)
    assert mcnemar_exact(0, 4) == 1.0 and mcnemar_exact(2, 2) == pytest.approx(11 / 16)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
