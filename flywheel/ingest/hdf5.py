"""LIBERO / robomimic-style HDF5 demonstrations: ``data/demo_N/{obs/*, actions, dones, rewards}``.

Environment/problem info comes from attributes of ``data`` (``problem_info`` JSON with
``language_instruction`` in LIBERO files; ``env_args`` in robomimic files; ``bddl_file_name``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from flywheel.ingest.common import IngestError, IngestOptions, lookup_libero_task, resize_image
from storage_schemas import EpisodeData, EpisodeMeta, Source
from storage_schemas.records import content_episode_id

# Proprio layouts tried in order when --proprio-keys is not given. The first matches sims' LIBERO adapter.
PROPRIO_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("robot0_gripper_qpos", "robot0_eef_pos", "robot0_eef_quat"),
    ("gripper_states", "ee_pos", "ee_ori"),
    ("proprio",),
    ("state",),
)
IMAGE_SUFFIXES = ("_rgb", "_image")
# LIBERO's published files store the hand orientation as a 3-dim axis-angle (robosuite's quat2axisangle of
# robot0_eef_quat); the simulator adapter and the model use the 4-dim quaternion (xyzw). Ingestion converts.
LIBERO_PUBLISHED = ("gripper_states", "ee_pos", "ee_ori")


def axisangle_to_quat(aa: np.ndarray) -> np.ndarray:
    """``(T, 3)`` axis-angle → ``(T, 4)`` unit quaternions (x, y, z, w), the inverse of robosuite's
    ``quat2axisangle`` (angle = 2·acos(w) in [0, 2π], so w keeps its sign and the round trip is exact)."""
    aa = np.asarray(aa, dtype=np.float64).reshape(-1, 3)
    angle = np.linalg.norm(aa, axis=1, keepdims=True)
    small = angle[:, 0] < 1e-8
    axis = aa / np.where(small[:, None], 1.0, angle)
    quat = np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], axis=1)
    quat[small] = (0.0, 0.0, 0.0, 1.0)
    return quat.astype(np.float32)


def _demo_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


@dataclass(frozen=True)
class _FileInfo:
    instruction: str
    suite: str
    task_id: int
    demos: list[str]
    proprio_keys: tuple[str, ...]
    image_keys: tuple[str, ...]
    action_dim: int
    proprio_dim: int  # as stored in the lake (after the orientation conversion)
    ori_to_quat: bool = False  # LIBERO's published layout: ee_ori axis-angle → quaternion


def _attr_json(group: h5py.Group, name: str) -> dict:
    raw = group.attrs.get(name)
    if raw is None:
        return {}
    try:
        return json.loads(raw if isinstance(raw, str) else raw.decode())
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return {}


def inspect_file(path: Path, opts: IngestOptions) -> _FileInfo:
    """Validate one file fully (keys, shapes, dims) without reading the bulk data."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise IngestError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        if "data" not in f:
            raise IngestError(f"{path}: no 'data' group (expected data/demo_N/...)")
        data = f["data"]
        demos = sorted((k for k in data if isinstance(data[k], h5py.Group)), key=_demo_key)
        if not demos:
            raise IngestError(f"{path}: 'data' holds no demo groups")
        problem = _attr_json(data, "problem_info")
        env_args = _attr_json(data, "env_args")
        instruction = (problem.get("language_instruction") or env_args.get("language_instruction")
                       or data.attrs.get("language_instruction") or "")
        if isinstance(instruction, bytes):
            instruction = instruction.decode()
        if isinstance(instruction, list | tuple):
            instruction = " ".join(instruction)
        bddl = str(data.attrs.get("bddl_file_name", "") or env_args.get("bddl_file", ""))
        if not instruction:
            stem = Path(bddl).stem if bddl else path.stem.removesuffix("_demo")
            instruction = re.sub(r"^.*SCENE\d+_", "", stem).replace("_", " ")
        suite, task_id = _suite_and_task(path, opts, instruction, bddl)
        first = data[demos[0]]
        if "obs" not in first:
            raise IngestError(f"{path}: {demos[0]} has no 'obs' group")
        obs_keys = set(first["obs"].keys())
        if opts.proprio_keys:
            missing = [k for k in opts.proprio_keys if k not in obs_keys]
            if missing:
                raise IngestError(f"{path}: proprio keys {missing} not in obs (has {sorted(obs_keys)})")
            proprio_keys = tuple(opts.proprio_keys)
        else:
            proprio_keys = next((lay for lay in PROPRIO_LAYOUTS if all(k in obs_keys for k in lay)), ())
            if not proprio_keys:
                raise IngestError(f"{path}: cannot find proprio in obs keys {sorted(obs_keys)}; pass --proprio-keys")
        image_keys = tuple(sorted(k for k in obs_keys if k.endswith(IMAGE_SUFFIXES) and first["obs"][k].ndim == 4))
        ori_to_quat = proprio_keys == LIBERO_PUBLISHED and first["obs"]["ee_ori"].shape[1:] == (3,)
        action_dim = proprio_dim = -1
        for name in demos:
            g = data[name]
            if "actions" not in g:
                raise IngestError(f"{path}: {name} has no 'actions' dataset")
            acts = g["actions"]
            if acts.ndim != 2 or acts.shape[0] == 0:
                raise IngestError(f"{path}: {name}/actions must be (T, A) with T > 0, got {acts.shape}")
            if "obs" not in g or any(k not in g["obs"] for k in proprio_keys + image_keys):
                raise IngestError(f"{path}: {name}/obs lacks some of {list(proprio_keys + image_keys)}")
            lengths = {g["obs"][k].shape[0] for k in proprio_keys + image_keys}
            if lengths != {acts.shape[0]}:
                raise IngestError(f"{path}: {name} has {acts.shape[0]} actions but obs lengths {sorted(lengths)}")
            pdim = sum(int(np.prod(g["obs"][k].shape[1:])) for k in proprio_keys) + int(ori_to_quat)
            if action_dim < 0:
                action_dim, proprio_dim = acts.shape[1], pdim
            elif (acts.shape[1], pdim) != (action_dim, proprio_dim):
                raise IngestError(f"{path}: {name} has action_dim={acts.shape[1]}, proprio_dim={pdim}; "
                                  f"earlier demos have {action_dim}, {proprio_dim}")
        return _FileInfo(instruction, suite, task_id, demos, proprio_keys, image_keys, action_dim, proprio_dim,
                         ori_to_quat)


def _suite_and_task(path: Path, opts: IngestOptions, instruction: str, bddl: str) -> tuple[str, int]:
    found = lookup_libero_task(instruction)
    if opts.suite:
        return opts.suite, found[1] if found and found[0] == opts.suite else 0
    if found:
        return found
    for part in Path(bddl).parts + path.parts:
        if part.startswith("libero_"):
            return part, 0
    return "hdf5_" + re.sub(r"[^a-zA-Z0-9_]+", "_", path.stem).strip("_").lower(), 0


def read_episodes(path: Path, opts: IngestOptions, info: _FileInfo | None = None) -> Iterator[EpisodeData]:
    """Yield the file's demos as lake episodes (call :func:`inspect_file` first to validate)."""
    info = info or inspect_file(path, opts)
    flip = True if opts.flip_images is None else opts.flip_images
    dataset_id = opts.dataset_id or f"hdf5:{path.stem}"
    with h5py.File(path, "r") as f:
        for name in info.demos:
            g = f["data"][name]
            actions = np.asarray(g["actions"], dtype=np.float32)
            parts = [np.asarray(g["obs"][k], dtype=np.float32).reshape(len(actions), -1) for k in info.proprio_keys]
            if info.ori_to_quat:  # gripper (2) | eef pos (3) | eef quat (4, xyzw): the simulator's convention
                parts[-1] = axisangle_to_quat(parts[-1])
            proprio = np.concatenate(parts, axis=1)
            # Demonstrations succeed by definition unless the file records a sparse reward that says otherwise.
            rewards = np.asarray(g["rewards"]) if "rewards" in g else np.zeros(0)
            success = bool(rewards[-1] > 0) if rewards.size and rewards.max() > 0 else True
            steps = opts.image_steps(len(actions))
            images = {}
            for key in info.image_keys:
                frames = np.asarray(g["obs"][key][steps])
                if flip:
                    frames = frames[:, ::-1]
                images[opts.camera_name(key)] = {
                    t: resize_image(np.ascontiguousarray(img), opts.image_size) for t, img in zip(steps, frames, strict=True)}
            meta = EpisodeMeta(
                episode_id=content_episode_id(info.suite, info.instruction, actions, proprio),
                source=Source.DEMO, suite=info.suite, task_id=info.task_id, instruction=info.instruction,
                dataset_id=dataset_id, policy="hdf5", success=success, gamma=opts.gamma,
            )
            yield EpisodeData(meta, proprio, actions, images)
