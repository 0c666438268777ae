"""``flywheel export lerobot``: lake → LeRobot v3 (lerobot's own writer) → ``LeRobotDataset`` reads it →
``flywheel ingest`` into a fresh lake gives the same episodes back."""

import numpy as np
from typer.testing import CliRunner

from flywheel.cli.app import app
from tests.fixtures.lake import lake_sql, write_synthetic_episodes

runner = CliRunner()


def _one_error_line(res):
    err = res.stderr if res.stderr_bytes is not None else res.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_export_round_trip(home, tmp_path):
    from flywheel.compat import ensure_torchvision

    write_synthetic_episodes(home / "lake", demos=2, successes=1, failures=1, length=20, image_size=16,
                             image_every=5)
    out = tmp_path / "exported"
    res = runner.invoke(app, ["export", "lerobot", str(out), "--home", str(home)])
    assert res.exit_code == 0, res.output
    assert "exported 4 episodes (80 frames" in res.output

    ensure_torchvision()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/exported", root=out)
    assert ds.num_episodes == 4 and ds.num_frames == 80
    assert {"observation.state", "action", "next.success", "next.reward", "value_target",
            "observation.images.agentview", "observation.images.eye_in_hand"} <= set(ds.features)

    other = tmp_path / "other"
    res = runner.invoke(app, ["ingest", str(out), "--home", str(other), "--suite", "libero_object"])
    assert res.exit_code == 0, res.output

    def episodes(root):
        rows = lake_sql(root, "SELECT e.success, e.length, list(s.action ORDER BY s.t), list(s.proprio ORDER BY s.t) "
                              "FROM episodes e JOIN steps s USING (episode_id) GROUP BY e.episode_id, e.success, e.length")
        return sorted((ok, n, np.round(np.array(a), 5).tolist(), np.round(np.array(p), 5).tolist())
                      for ok, n, a, p in rows)

    assert episodes(home / "lake") == episodes(other / "lake")  # counts, actions, proprio, success flags


def test_export_bad_input(home, tmp_path):
    assert "holds no episodes" in _one_error_line(
        runner.invoke(app, ["export", "lerobot", str(tmp_path / "a"), "--home", str(home)]))
    write_synthetic_episodes(home / "lake", demos=1, length=12, image_size=16, image_every=6)
    assert "selection is empty" in _one_error_line(
        runner.invoke(app, ["export", "lerobot", str(tmp_path / "b"), "--where", "task_id = 99", "--home", str(home)]))
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep me")
    assert "not empty" in _one_error_line(
        runner.invoke(app, ["export", "lerobot", str(tmp_path / "c"), "--home", str(home)]))
    assert (tmp_path / "c" / "x").read_text() == "keep me"
