"""Shared pieces of every ingestion source: options, errors, camera names, image resizing, LIBERO task lookup."""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from storage_schemas import EpisodeData


class IngestError(ValueError):
    """The source cannot be ingested; the message names the problem. Nothing was written."""


# Source camera names -> the project's canonical names (third-person "agentview", wrist "eye_in_hand").
CAMERA_ALIASES: dict[str, str] = {
    "image": "agentview",
    "agentview": "agentview",
    "agentview_image": "agentview",
    "agentview_rgb": "agentview",
    "front": "agentview",
    "wrist_image": "eye_in_hand",
    "wrist": "eye_in_hand",
    "eye_in_hand": "eye_in_hand",
    "eye_in_hand_rgb": "eye_in_hand",
    "robot0_eye_in_hand_image": "eye_in_hand",
}


@dataclass(frozen=True)
class IngestOptions:
    """How a source maps onto the lake.

    Attributes:
        suite: suite name for every episode; None = detect (LIBERO task lookup), else ``"<format>_<name>"``.
        dataset_id: id stored on every row; None = derived from the source name.
        image_size: square size images are resized to (the size the rollouts render at).
        image_every: keep camera images every k-th step (plus the last step); 1 keeps all.
        camera_map: extra/overriding source camera name -> canonical name.
        flip_images: HDF5 only: flip rows (robosuite renders upside down); None = True for HDF5.
        proprio_keys: HDF5 only: obs keys concatenated into proprio; None = auto.
        state_key / action_key / success_key: LeRobot only: the features read as proprio, action and terminal
            success; None = the first of ``observation.state`` / ``action`` / ``next.success`` (and aliases) found.
        chunk_episodes: episodes per atomic lake write.
    """

    suite: str | None = None
    dataset_id: str | None = None
    image_size: int = 64
    image_every: int = 4
    camera_map: Mapping[str, str] = field(default_factory=dict)
    flip_images: bool | None = None
    proprio_keys: tuple[str, ...] | None = None
    state_key: str | None = None
    action_key: str | None = None
    success_key: str | None = None
    chunk_episodes: int = 32
    gamma: float = 0.99

    def camera_name(self, source_name: str) -> str:
        short = source_name.removeprefix("observation.images.").removeprefix("obs/")
        return self.camera_map.get(short) or CAMERA_ALIASES.get(short, short)

    def image_steps(self, length: int) -> list[int]:
        steps = list(range(0, length, self.image_every))
        if length and steps[-1] != length - 1:
            steps.append(length - 1)
        return steps


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8 (bilinear; no-op when already that size)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """Accept ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [0, 1]; return ``(H, W, 3)`` uint8."""
    a = np.asarray(image)
    if a.ndim != 3:
        raise IngestError(f"image must be 3-D, got shape {a.shape}")
    if a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


@functools.cache
def _libero_tasks() -> dict[str, tuple[str, int]]:
    """Instruction -> (suite, task_id) for the LIBERO benchmark (task order of task_order_index 0)."""
    try:  # lazy: imports LIBERO, which prints its config on first use
        with contextlib.redirect_stdout(io.StringIO()):
            from libero.libero.benchmark import libero_suite_task_map as m
    except Exception:  # noqa: BLE001 - LIBERO not importable: no lookup
        return {}
    out: dict[str, tuple[str, int]] = {}
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        for i, name in enumerate(m.libero_task_map[suite]):
            language = name[name.find("SCENE") + (8 if "SCENE10" in name else 7):] if name[0].isupper() else name
            out.setdefault(_norm(language.replace("_", " ")), (suite, i))
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split()).strip(" .")


def lookup_libero_task(instruction: str) -> tuple[str, int] | None:
    """(suite, task_id) of a LIBERO task from its language instruction, or None."""
    return _libero_tasks().get(_norm(instruction))


@dataclass
class IngestSummary:
    source: str
    format: str
    episodes: int = 0
    steps: int = 0
    replaced: int = 0
    suites: dict[str, int] = field(default_factory=dict)
    cameras: list[str] = field(default_factory=list)


EpisodeIterator = Iterator[EpisodeData]
