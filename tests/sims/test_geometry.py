"""Pure-logic tests of the expert's geometry (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from sims.expert.geometry import (
    boxes_overlap_2d,
    down_rotation,
    footprint,
    gripper_footprint,
    nearest_equivalent_yaw,
    orientation_error,
    quat_xyzw_to_mat,
    site_yaw,
)
from sims.scene import BodyState


def _rotz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_down_rotation_is_proper_and_points_down() -> None:
    for yaw in (0.0, 0.7, -2.0):
        r = down_rotation(yaw)
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(r[:, 2], [0, 0, -1])
        assert site_yaw(r) == pytest.approx(yaw)


def test_orientation_error_zero_at_goal_and_signed() -> None:
    r = down_rotation(0.3)
    np.testing.assert_allclose(orientation_error(r, r), 0.0, atol=1e-12)
    err = orientation_error(down_rotation(0.4), r)  # need +0.1 rad about world z
    assert err[2] == pytest.approx(np.sin(0.1), abs=1e-6)
    assert abs(err[0]) < 1e-9 and abs(err[1]) < 1e-9


def test_nearest_equivalent_yaw_uses_gripper_symmetry() -> None:
    assert nearest_equivalent_yaw(np.pi - 0.1, 0.0) == pytest.approx(-0.1)
    assert nearest_equivalent_yaw(0.2, 3.0) == pytest.approx(0.2 + np.pi)


def test_quat_to_mat_matches_rotz() -> None:
    a = 0.8
    q = np.array([0, 0, np.sin(a / 2), np.cos(a / 2)])  # xyzw
    np.testing.assert_allclose(quat_xyzw_to_mat(q), _rotz(a), atol=1e-12)


def test_footprint_of_rotated_box_lying_on_its_side() -> None:
    # body frame: long axis local y (0.14 m), vertical axis local x; rotated so local y -> world x
    mat = np.array([[0, 1.0, 0], [0, 0, -1.0], [1.0, 0, 0]])  # columns: local x->world z, y->world x, z->-world y
    body = BodyState(
        pos=np.array([0.1, 0.2, 0.05]),
        quat=np.array([0, 0, 0, 1.0]),
        lo=np.array([0.03, 0.18, 0.0]),
        hi=np.array([0.17, 0.22, 0.1]),
        mat=mat,
        local_lo=np.array([-0.05, -0.07, -0.02]),
        local_hi=np.array([0.05, 0.07, 0.02]),
    )
    fp = footprint(body)
    np.testing.assert_allclose(sorted(fp.half), [0.02, 0.07])
    long_axis = fp.axes[int(np.argmax(fp.half))]
    assert abs(long_axis[0]) == pytest.approx(1.0)
    np.testing.assert_allclose(fp.center, [0.1, 0.2])
    assert fp.height == pytest.approx(0.1)


def test_box_overlap_separating_axis() -> None:
    a = gripper_footprint(np.array([0.0, 0.0]), 0.0, open_width=0.1, depth=0.02)
    near = gripper_footprint(np.array([0.09, 0.0]), 0.0, open_width=0.1, depth=0.02)
    far = gripper_footprint(np.array([0.0, 0.05]), 0.0, open_width=0.1, depth=0.02)
    rotated = gripper_footprint(np.array([0.0, 0.03]), np.pi / 2, open_width=0.1, depth=0.02)
    assert boxes_overlap_2d(a, near)
    assert not boxes_overlap_2d(a, far)
    assert boxes_overlap_2d(a, rotated)
