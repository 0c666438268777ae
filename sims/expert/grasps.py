"""Grasp selection for the scripted expert (pure functions over a :class:`SceneSnapshot`).

A grasp is stored in the object's body frame, so it follows the object if it is nudged while the
gripper approaches. Boxes and cans are closed across their narrow horizontal side at the centre;
objects too wide for the Panda's 8 cm opening (bowls, plates) are gripped on the rim, radially.
Candidates whose open-finger footprint would hit a neighbour are rejected; among the rest the expert
prefers clearance, short reach from the robot base and little wrist rotation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sims.expert.geometry import Footprint, boxes_overlap_2d, footprint, gripper_footprint, yaw_of
from sims.scene import BodyState, SceneSnapshot

MAX_GRASP_WIDTH = 0.072  # m; the Panda opens to ~8 cm
FINGER_DEPTH = 0.025  # m below the top at which the fingertips close on tall objects
RIM_DEPTH = 0.025  # m below the rim for rim grasps (pads straddle the wall)
MAX_REACH = 0.72  # m from the robot base in xy; the arm locks straight near 0.76 m


@dataclass(frozen=True)
class Grasp:
    """A grasp in the object's body frame: site position ``(3,)`` and finger axis ``(3,)``."""

    offset: np.ndarray
    axis: np.ndarray
    width: float  # object width between the fingers (m)

    def world(self, body: BodyState) -> tuple[np.ndarray, float]:
        """World grasp position ``(3,)`` and finger yaw for the object's current pose."""
        pos = body.pos + body.mat @ self.offset
        return pos, yaw_of((body.mat @ self.axis)[:2])


def _obstacles(snap: SceneSnapshot, exclude: str, min_top: float) -> Iterable[np.ndarray]:
    """xy corner arrays ``(4, 2)`` of every body part (other than ``exclude``) reaching above ``min_top``."""
    for name, body in snap.objects.items():
        if name != exclude and body.hi[2] > min_top:
            yield footprint(body).corners()
    for body in snap.fixtures.values():
        for lo, hi in body.parts.values():
            if hi[2] > min_top:
                yield np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])


def clearance(snap: SceneSnapshot, exclude: str, center: np.ndarray, yaw: float, z: float, width: float) -> float:
    """Largest margin in {0, 1, 2, 3} cm at which the open fingers at ``center`` hit nothing (-1: collide)."""
    obstacles = list(_obstacles(snap, exclude, z - 0.005))
    # the palm (~21 cm along the finger axis) sits ~7 cm above the grasp point
    palm_obstacles = list(_obstacles(snap, exclude, z + 0.06))
    best = -1.0
    for margin in (0.0, 0.01, 0.02, 0.03):
        fingers = gripper_footprint(center, yaw, width + 0.03 + 2 * margin, 0.025 + 2 * margin)
        palm = gripper_footprint(center, yaw, 0.21 + 2 * margin, 0.065 + 2 * margin)
        if any(boxes_overlap_2d(fingers, o) for o in obstacles):
            break
        if any(boxes_overlap_2d(palm, o) for o in palm_obstacles):
            break
        best = margin
    return best


def grasp_candidates(fp: Footprint, body: BodyState) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """World candidates ``(pos (3,), finger axis (3,), width)`` for an object's footprint."""
    out = []
    for k in range(2):
        width = 2.0 * float(fp.half[k])
        if width <= MAX_GRASP_WIDTH:
            z = max(fp.z_hi - FINGER_DEPTH, fp.z_lo + min(0.012, fp.height / 2))
            out.append((np.array([*fp.center, z]), np.array([*fp.axes[k], 0.0]), width))
    if not out:  # too wide: rim grasp (bowls), radially, fingers across the wall
        radius = float(min(fp.half))
        z = fp.z_hi - min(RIM_DEPTH, 0.5 * fp.height)
        for ang in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            d = np.array([np.cos(ang), np.sin(ang)])
            out.append((np.array([*(fp.center + (radius - 0.008) * d), z]), np.array([*d, 0.0]), 0.06))
    return out


def choose_grasp(snap: SceneSnapshot, name: str, current_yaw: float, attempt: int = 0) -> Grasp:
    """Best grasp of object ``name`` (body frame); ``attempt`` > 0 rotates through the ranked list."""
    body = snap.objects[name]
    fp = footprint(body)
    base = snap.base_pos[:2]
    scored = []
    for pos, axis, width in grasp_candidates(fp, body):
        yaw = yaw_of(axis[:2])
        margin = clearance(snap, name, pos[:2], yaw, pos[2], width)
        reach = float(np.linalg.norm(pos[:2] - base))
        dyaw = abs((yaw - current_yaw + np.pi / 2) % np.pi - np.pi / 2)
        score = 10.0 * margin - 2.0 * max(0.0, reach - MAX_REACH + 0.1) - 0.02 * dyaw - 0.05 * reach
        if margin < 0:
            score -= 1.0
        scored.append((score, pos, axis, width))
    scored.sort(key=lambda s: -s[0])
    _, pos, axis, width = scored[attempt % len(scored)]
    return Grasp(body.mat.T @ (pos - body.pos), body.mat.T @ axis, width)
