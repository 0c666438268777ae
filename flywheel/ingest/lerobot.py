"""LeRobot datasets (v3.0 layout) as written by ``LeRobotDataset``, read through lerobot's own API.

Scalar columns come from the dataset's Arrow table in one pass; camera frames (image or video mode,
decoded by lerobot/torchcodec) are read only at the steps the lake keeps (``image_every``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flywheel.compat import ensure_torchvision
from flywheel.ingest.common import IngestError, IngestOptions, lookup_libero_task, resize_image, to_uint8_hwc
from storage_schemas import EpisodeData, EpisodeMeta, Source
from storage_schemas.records import content_episode_id

STATE_KEYS = ("observation.state", "observation.proprio", "state")
ACTION_KEYS = ("action", "actions")
SUCCESS_KEYS = ("next.success", "success")


def is_lerobot_dataset(path: Path) -> bool:
    return (path / "meta" / "info.json").is_file() and (path / "data").is_dir()


def feature_keys(path: Path, feats: dict, opts: IngestOptions) -> tuple[str, str, str | None]:
    """(state, action, success-or-None) feature names: the flags when given (checked), else the first alias found."""
    def pick(flag: str, given: str | None, aliases: tuple[str, ...], what: str) -> str | None:
        if given is not None:
            if given not in feats:
                raise IngestError(f"{path}: --{flag} {given!r} is not a feature (features: {sorted(feats)})")
            return given
        found = next((k for k in aliases if k in feats), None)
        if found is None and what:
            raise IngestError(f"{path}: dataset has no {what} feature (one of {aliases}; features: {sorted(feats)}); "
                              f"name it with --{flag}")
        return found

    return (pick("state-key", opts.state_key, STATE_KEYS, "proprio"),  # type: ignore[return-value]
            pick("action-key", opts.action_key, ACTION_KEYS, "action"),
            pick("success-key", opts.success_key, SUCCESS_KEYS, ""))


def inspect_dataset(path: Path, opts: IngestOptions | None = None) -> dict:
    """Read and check ``meta/info.json`` (no lerobot import): returns the info dict."""
    try:
        info = json.loads((path / "meta" / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IngestError(f"{path}: unreadable meta/info.json ({exc})") from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise IngestError(f"{path}: LeRobot codebase_version {version or '?'} is not supported (need v3.x; "
                          "convert older datasets with lerobot's conversion script)")
    feature_keys(path, info.get("features", {}), opts or IngestOptions())
    return info


def read_episodes(path: Path, opts: IngestOptions) -> Iterator[EpisodeData]:
    """Yield every episode of the LeRobot dataset at ``path`` as lake episodes."""
    info = inspect_dataset(path, opts)
    ensure_torchvision()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # slow import: only when ingesting LeRobot

    feats = info["features"]
    state_key, action_key, success_col = feature_keys(path, feats, opts)
    camera_keys = [k for k, v in feats.items() if v.get("dtype") in ("image", "video")]
    try:
        ds = LeRobotDataset(f"local/{path.name}", root=path)
    except Exception as exc:  # noqa: BLE001 - lerobot raises many types for a broken folder
        raise IngestError(f"{path}: lerobot cannot open the dataset: {exc}") from exc
    table = ds.hf_dataset.with_format("arrow")[:]
    ep_index = table.column("episode_index").to_numpy()
    frame_index = table.column("frame_index").to_numpy()
    task_index = table.column("task_index").to_numpy()
    states = np.stack(table.column(state_key).to_numpy(zero_copy_only=False)).astype(np.float32)
    actions = np.stack(table.column(action_key).to_numpy(zero_copy_only=False)).astype(np.float32)
    tasks = {int(i): str(name) for name, i in zip(ds.meta.tasks.index, ds.meta.tasks["task_index"], strict=True)}
    dataset_id = opts.dataset_id or f"lerobot:{path.name}"
    if success_col is None:  # stated, and recorded on every episode of this dataset (queryable by dataset_id)
        print(f"{path.name}: no success feature (next.success / success): every episode is stored as a successful "
              "demonstration")
        dataset_id += "#success-assumed"
    for ep in np.unique(ep_index):
        rows = np.flatnonzero(ep_index == ep)
        rows = rows[np.argsort(frame_index[rows])]
        instruction = tasks.get(int(task_index[rows[0]]), "")
        found = lookup_libero_task(instruction)
        if opts.suite:
            suite, task_id = opts.suite, int(task_index[rows[0]])
            if found and found[0] == suite:
                task_id = found[1]
        elif found:
            suite, task_id = found
        else:
            suite = "lerobot_" + re.sub(r"[^a-zA-Z0-9_]+", "_", path.name).strip("_").lower()
            task_id = int(task_index[rows[0]])
        last = table.column(success_col)[int(rows[-1])].as_py() if success_col else True
        success = bool(last[0] if isinstance(last, list) and last else last)  # (1,)-shaped features come as lists
        images: dict[str, dict[int, np.ndarray]] = {}
        for t in opts.image_steps(len(rows)):
            item = ds[int(rows[t])]
            for key in camera_keys:
                images.setdefault(opts.camera_name(key), {})[t] = resize_image(
                    to_uint8_hwc(item[key].numpy()), opts.image_size)
        a, p = actions[rows], states[rows]
        meta = EpisodeMeta(
            episode_id=content_episode_id(suite, instruction, a, p), source=Source.DEMO, suite=suite,
            task_id=task_id, instruction=instruction or f"task {int(task_index[rows[0]])}", dataset_id=dataset_id,
            policy="lerobot", success=success, gamma=opts.gamma,
        )
        yield EpisodeData(meta, p, a, images)


def expected_suites(path: Path, opts: IngestOptions) -> dict[str, tuple[int, int]]:
    """Suites the dataset's episodes will land in, with (action_dim, proprio_dim), from metadata only."""
    import pyarrow.parquet as pq

    info = inspect_dataset(path, opts)
    feats = info["features"]
    state_key, action_key, _ = feature_keys(path, feats, opts)
    action_dim = int(np.prod(feats[action_key]["shape"]))
    proprio_dim = int(np.prod(feats[state_key]["shape"]))
    if opts.suite:
        return {opts.suite: (action_dim, proprio_dim)}
    tasks_file = path / "meta" / "tasks.parquet"
    names: list[str] = []
    if tasks_file.exists():
        t = pq.read_table(tasks_file)
        names = [str(x) for x in (t.column("__index_level_0__").to_pylist() if "__index_level_0__" in t.column_names
                                  else t.column(0).to_pylist())]
    default = "lerobot_" + re.sub(r"[^a-zA-Z0-9_]+", "_", path.name).strip("_").lower()
    suites = {(lookup_libero_task(n) or (default, 0))[0] for n in names} or {default}
    return {s: (action_dim, proprio_dim) for s in suites}
