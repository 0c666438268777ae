"""Lake episodes → a LeRobot v3 dataset, written through lerobot's own ``LeRobotDataset`` API.

Feature mapping (the inverse of ``flywheel ingest`` for LeRobot):

| LeRobot feature | from the lake |
|---|---|
| ``observation.state`` (P,) float32 | ``steps.proprio`` |
| ``action`` (A,) float32 | ``steps.action`` |
| ``observation.images.<camera>`` (H, W, 3) image | ``steps.images[camera]``; steps without a render repeat the last rendered frame (the lake keeps every k-th) |
| ``next.reward`` (1,) float32 | ``steps.reward`` (sparse: 1 on the last step of a success) |
| ``next.done`` (1,) bool | ``steps.done`` |
| ``next.success`` (1,) bool | true on the last step of a successful episode |
| ``value_target`` (1,) float32 | ``steps.value_target`` (discounted Monte-Carlo return) |
| ``task`` | ``episodes.instruction`` |

One dataset has one shape: every selected episode must share action/proprio dims, cameras and image size.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage_schemas import LakeLayout


class ExportError(ValueError):
    """The selection cannot be exported (empty, mixed shapes, output exists); nothing was written."""


@dataclass
class ExportSummary:
    out: str
    episodes: int
    frames: int
    cameras: list[str]


def _selection(lake: LakeLayout, where: str):
    from flywheel.episodes import select_episodes

    if not lake.parts("episodes"):
        raise ExportError(f"the lake at {lake.root} holds no episodes")
    try:
        episodes = select_episodes(lake, where)
    except Exception as exc:  # noqa: BLE001 - DuckDB parser/binder errors: the user's SQL
        raise ExportError(f"--where {where!r}: {exc}") from None
    if episodes.num_rows == 0:
        raise ExportError(f"the selection is empty: no episode matches {where!r}")
    return episodes


def export_lerobot(lake: LakeLayout, out: Path, where: str = "true", fps: int = 20,
                   on_episode: Callable[[int], None] | None = None) -> ExportSummary:
    """Write the episodes matching ``where`` (SQL over the ``episodes`` view) to a new LeRobot dataset at ``out``."""
    from flywheel.compat import ensure_torchvision
    from flywheel.episodes import _steps_by_episode
    from storage_schemas.records import decode_png
    from storage_schemas.views import connect

    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    episodes = _selection(lake, where)
    rows = episodes.to_pylist()
    ids = [r["episode_id"] for r in rows]
    con = connect(lake)
    con.register("sel", episodes.select(["episode_id"]))
    dims = con.sql("SELECT DISTINCT action_dim, proprio_dim FROM episodes JOIN sel USING (episode_id)").fetchall()
    cams = {tuple(sorted(r["cameras"])) for r in rows}
    if len(dims) != 1 or len(cams) != 1:
        con.close()
        raise ExportError(f"the selection mixes shapes (action/proprio dims {sorted(dims)}, cameras {sorted(cams)}); "
                          f"narrow --where to one suite")
    (action_dim, proprio_dim), cameras = dims[0], list(next(iter(cams)))
    first = next(_steps_by_episode(con, ids[:1], "images"))[1]
    sample = next(dict(e) for e in first.column("images").to_pylist() if e)
    h, w = decode_png(sample[cameras[0]]).shape[:2]
    ensure_torchvision()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # slow import: only when exporting

    image = {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channel"]}
    features = {**{f"observation.images.{c}": image for c in cameras},
                "observation.state": {"dtype": "float32", "shape": (proprio_dim,), "names": None},
                "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
                "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
                "next.done": {"dtype": "bool", "shape": (1,), "names": None},
                "next.success": {"dtype": "bool", "shape": (1,), "names": None},
                "value_target": {"dtype": "float32", "shape": (1,), "names": None}}
    frames = 0
    try:
        ds = LeRobotDataset.create(repo_id=f"local/{out.name}", fps=fps, features=features, root=out,
                                   use_videos=False)
        columns = "proprio, action, reward, done, value_target, images"
        chunks = (_steps_by_episode(con, ids[s:s + 8], columns) for s in range(0, len(ids), 8))  # 8 episodes a query
        steps_iter = (item for chunk in chunks for item in chunk)
        for i, (row, (_, steps)) in enumerate(zip(rows, steps_iter, strict=True)):
            held: dict[str, np.ndarray] = {}
            proprio, action = steps.column("proprio").to_pylist(), steps.column("action").to_pylist()
            reward, done = steps.column("reward").to_pylist(), steps.column("done").to_pylist()
            value, images = steps.column("value_target").to_pylist(), steps.column("images").to_pylist()
            n = len(proprio)
            for t in range(n):
                for cam, png in dict(images[t] or []).items():
                    if cam in cameras:
                        held[cam] = decode_png(png)
                if len(held) != len(cameras):
                    raise ExportError(f"episode {row['episode_id']} has no image of {sorted(set(cameras) - set(held))} "
                                      f"at or before step {t}")
                ds.add_frame({**{f"observation.images.{c}": held[c] for c in cameras},
                              "observation.state": np.asarray(proprio[t], np.float32),
                              "action": np.asarray(action[t], np.float32),
                              "next.reward": np.array([reward[t]], np.float32),
                              "next.done": np.array([bool(done[t])]),
                              "next.success": np.array([bool(row["success"]) and t == n - 1]),
                              "value_target": np.array([value[t]], np.float32), "task": row["instruction"]})
            ds.save_episode()
            frames += n
            if on_episode:
                on_episode(i + 1)
        ds.finalize()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-written
        raise
    finally:
        con.close()
    return ExportSummary(str(out), len(rows), frames, cameras)
