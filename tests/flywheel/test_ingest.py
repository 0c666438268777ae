"""Ingestion of LeRobot datasets (made with lerobot's own API) and LIBERO-style HDF5 files."""

import os

import h5py
import pytest

from flywheel.ingest import IngestError, IngestOptions, ingest
from storage_schemas import LakeError, LakeWriter
from storage_schemas.stats import load_suite_stats
from storage_schemas.views import connect
from tests.fixtures.datasets import make_hdf5, make_lerobot_dataset


def lake_counts(writer):
    con = connect(writer.layout)
    return con.sql("select count(*) from episodes").fetchall()[0][0], con.sql("select count(*) from steps").fetchall()[0][0]


def lake_files(writer):
    return sorted(str(p) for p in writer.layout.root.rglob("*") if p.is_file() and "locks" not in p.parts)


@pytest.fixture(scope="module")
def lerobot_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    return {
        "image": make_lerobot_dataset(root / "ds_image", [6, 9, 4], tasks=("pick the cube", "open the drawer")),
        "video": make_lerobot_dataset(root / "ds_video", [5, 7], video=True),
    }


@pytest.mark.parametrize("mode", ["image", "video"])
def test_lerobot_counts_exact_and_idempotent(tmp_path, lerobot_sources, mode):
    w = LakeWriter(tmp_path / "lake")
    src = lerobot_sources[mode]
    expected = (3, 19) if mode == "image" else (2, 12)
    s = ingest(src, w, IngestOptions(image_every=2, image_size=16))
    assert (s.episodes, s.steps) == expected
    assert lake_counts(w) == expected
    assert set(s.cameras) == {"agentview", "eye_in_hand"}
    s2 = ingest(src, w, IngestOptions(image_every=2, image_size=16))
    assert s2.replaced == expected[0]
    assert lake_counts(w) == expected
    con = connect(w.layout)
    imgs = con.sql("select count(*) from steps where images is not null").fetchall()[0][0]
    assert imgs == sum(len(range(0, n, 2)) + ((n - 1) % 2 != 0) for n in ([6, 9, 4] if mode == "image" else [5, 7]))
    assert con.sql("select count(distinct instruction) from episodes").fetchall()[0][0] == (2 if mode == "image" else 1)
    stats = load_suite_stats(w.layout, s.suites and next(iter(s.suites)))
    assert len(stats.action.min) == 7 and len(stats.proprio.max) == 9


def test_hdf5_counts_libero_lookup_and_stats(tmp_path):
    w = LakeWriter(tmp_path / "lake")
    f = make_hdf5(tmp_path / "pick.hdf5", [10, 12, 7])
    s = ingest(f, w, IngestOptions(image_every=4, image_size=16))
    assert (s.episodes, s.steps) == (3, 29)
    assert s.suites == {"libero_object": 3}  # resolved from the language instruction
    assert lake_counts(w) == (3, 29)
    con = connect(w.layout)
    assert con.sql("select distinct task_id from episodes").fetchall() == [(0,)]
    ingest(f, w, IngestOptions(image_every=4, image_size=16))
    assert lake_counts(w) == (3, 29)
    st = load_suite_stats(w.layout, "libero_object")
    assert st.num_episodes == 3 and st.num_steps == 29 and len(st.proprio.min) == 9  # axis-angle → quaternion


def test_missing_path(tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        ingest(tmp_path / "nope", LakeWriter(tmp_path / "lake"))


def test_folder_neither_lerobot_nor_hdf5(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "readme.txt").write_text("hi")
    with pytest.raises(IngestError, match="neither a LeRobot dataset"):
        ingest(d, LakeWriter(tmp_path / "lake"))


def test_hdf5_without_actions_writes_nothing(tmp_path):
    w = LakeWriter(tmp_path / "lake")
    before = lake_files(w)
    f = make_hdf5(tmp_path / "bad.hdf5", [5, 6], with_actions=False)
    with pytest.raises(IngestError, match="no 'actions'"):
        ingest(f, w)
    assert lake_files(w) == before


def test_hdf5_with_unknown_proprio_keys_names_them_and_the_flag(tmp_path, home):
    from typer.testing import CliRunner

    from flywheel.cli.app import app

    f = make_hdf5(tmp_path / "odd.hdf5", [5])
    with h5py.File(f, "a") as h:
        for k in ("gripper_states", "ee_pos", "ee_ori"):
            h["data/demo_0/obs"].move(k, f"robot_{k}")
    res = CliRunner().invoke(app, ["ingest", str(f)])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--proprio-keys" in res.output and "robot_ee_pos" in res.output
    assert not list((home / "lake").rglob("*.parquet"))
    res = CliRunner().invoke(app, ["ingest", str(f), "--proprio-keys", "robot_gripper_states,robot_ee_pos,robot_ee_ori"])
    assert res.exit_code == 0, res.output


def test_second_bad_file_in_folder_writes_nothing(tmp_path):
    w = LakeWriter(tmp_path / "lake")
    d = tmp_path / "many"
    d.mkdir()
    make_hdf5(d / "a.hdf5", [5])
    make_hdf5(d / "b.hdf5", [5])
    with h5py.File(d / "b.hdf5", "a") as fh:
        del fh["data/demo_0/actions"]
    with pytest.raises(IngestError, match="b.hdf5"):
        ingest(d, w)
    assert lake_counts(w) == (0, 0)


def test_dimension_mismatch_with_lake_writes_nothing(tmp_path):
    w = LakeWriter(tmp_path / "lake")
    ingest(make_hdf5(tmp_path / "a.hdf5", [5, 5]), w)
    before = lake_files(w)
    with pytest.raises(LakeError, match="action_dim=8"):
        ingest(make_hdf5(tmp_path / "b.hdf5", [6], action_dim=8, seed=3), w)
    assert lake_files(w) == before
    assert lake_counts(w) == (2, 10)


def test_format_mismatch(tmp_path):
    f = make_hdf5(tmp_path / "a.hdf5", [3])
    with pytest.raises(IngestError, match="--format lerobot"):
        ingest(f, LakeWriter(tmp_path / "lake"), fmt="lerobot")


def test_no_temp_files_left(tmp_path):
    w = LakeWriter(tmp_path / "lake")
    ingest(make_hdf5(tmp_path / "a.hdf5", [4, 4]), w)
    assert not [p for p in lake_files(w) if p.endswith(".tmp")]
    assert os.listdir(w.layout.journal_dir) == []


def test_lerobot_feature_mapping_flags_and_unlabelled_success(tmp_path, lerobot_sources, capsys):
    from flywheel.ingest.common import IngestError

    src = lerobot_sources["image"]
    w = LakeWriter(tmp_path / "lake")
    with pytest.raises(IngestError, match=r"--state-key 'observation.proprio' is not a feature \(features: \["):
        ingest(src, w, IngestOptions(state_key="observation.proprio"))
    with pytest.raises(IngestError, match="--success-key 'next.done'"):
        ingest(src, w, IngestOptions(success_key="next.done"))
    assert [f for f in lake_files(w) if f.endswith(".parquet")] == []  # no episode written
    # the dataset has no success feature: stated, and recorded in dataset_id
    s = ingest(src, w, IngestOptions(image_every=4, image_size=16, state_key="observation.state", action_key="action"))
    assert s.episodes == 3 and "every episode is stored as a successful demonstration" in capsys.readouterr().out
    rows = connect(w.layout).sql("select distinct dataset_id, success, source from episodes").fetchall()
    assert rows == [("lerobot:ds_image#success-assumed", True, "demo")]
