"""Low-level servoing: turn an end-effector target into one OSC delta-pose action."""

from __future__ import annotations

import numpy as np

from sims.expert.geometry import (
    down_rotation,
    nearest_equivalent_yaw,
    orientation_error,
    quat_xyzw_to_mat,
    site_yaw,
)
from sims.scene import SceneSnapshot

GRIP_OPEN = -1.0
GRIP_CLOSE = 1.0


def eef_rotation(snap: SceneSnapshot) -> np.ndarray:
    """``(3, 3)`` current control-site rotation."""
    return quat_xyzw_to_mat(snap.eef_quat)


def servo(
    snap: SceneSnapshot,
    target_pos: np.ndarray,
    target_yaw: float | None,
    grip: float,
    *,
    pos_gain: float = 12.0,
    rot_gain: float = 3.0,
    max_speed: float = 1.0,
) -> np.ndarray:
    """One ``(7,)`` action moving the gripper towards ``target_pos`` pointing down at ``target_yaw``.

    Args:
        target_pos: ``(3,)`` world target of the control site.
        target_yaw: finger-axis yaw (mod pi); None keeps the current yaw.
        grip: -1 open, +1 close.
        pos_gain: action per metre of error (robosuite maps action 1 to a 5 cm goal offset).
        max_speed: clip of the translational action.
    """
    rot = eef_rotation(snap)
    cur_yaw = site_yaw(rot)
    yaw = cur_yaw if target_yaw is None else nearest_equivalent_yaw(target_yaw, cur_yaw)
    err = orientation_error(down_rotation(yaw), rot)
    dpos = np.clip(pos_gain * (np.asarray(target_pos) - snap.eef_pos), -max_speed, max_speed)
    drot = np.clip(rot_gain * err, -1.0, 1.0)
    return np.concatenate([dpos, drot, [grip]]).astype(np.float32)


def yaw_error(snap: SceneSnapshot, target_yaw: float) -> float:
    """Absolute finger-axis yaw error (rad, mod pi)."""
    cur = site_yaw(eef_rotation(snap))
    return abs(nearest_equivalent_yaw(target_yaw, cur) - cur)


def gripper_width(snap: SceneSnapshot) -> float:
    """Finger opening (m): sum of the two finger joint magnitudes."""
    return float(np.abs(snap.gripper_qpos).sum())
