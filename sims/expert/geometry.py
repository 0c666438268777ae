"""Pure geometry for the scripted expert (no simulator): footprints, grasp frames, orientation errors.

Conventions: world frame z up; the Panda control site's x axis is the finger closing axis and its z
axis the approach direction, so a top-down grasp with finger axis at yaw ``psi`` is
:func:`down_rotation` ``(psi)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sims.scene import BodyState


@dataclass(frozen=True)
class Footprint:
    """Horizontal oriented box of an object.

    Attributes:
        center: ``(2,)`` xy centre (m).
        axes: ``(2, 2)`` rows are the unit xy directions of the box's two horizontal axes.
        half: ``(2,)`` half extents along ``axes``.
        z_lo / z_hi: bottom and top heights (m).
    """

    center: np.ndarray
    axes: np.ndarray
    half: np.ndarray
    z_lo: float
    z_hi: float

    @property
    def height(self) -> float:
        return self.z_hi - self.z_lo

    def corners(self, margin: float = 0.0) -> np.ndarray:
        """``(4, 2)`` xy corners, grown by ``margin``."""
        h = self.half + margin
        a, b = self.axes[0] * h[0], self.axes[1] * h[1]
        return np.stack([self.center + a + b, self.center + a - b, self.center - a - b, self.center - a + b])


def footprint(body: BodyState) -> Footprint:
    """The horizontal oriented bounding box of ``body`` (from its body-frame AABB and rotation)."""
    mat = np.asarray(body.mat)
    lo, hi = np.asarray(body.local_lo), np.asarray(body.local_hi)
    vertical = int(np.argmax(np.abs(mat[2, :])))
    others = [i for i in range(3) if i != vertical]
    axes, half = [], []
    for i in others:
        d = mat[:2, i]
        n = float(np.linalg.norm(d))
        axes.append(d / n if n > 1e-6 else np.array([1.0, 0.0]))
        half.append((hi[i] - lo[i]) / 2.0)
    center = body.pos + mat @ ((lo + hi) / 2.0)
    return Footprint(center[:2].copy(), np.stack(axes), np.asarray(half), float(body.lo[2]), float(body.hi[2]))


def yaw_of(direction: np.ndarray) -> float:
    """Yaw (rad) of an xy direction."""
    return float(np.arctan2(direction[1], direction[0]))


def nearest_equivalent_yaw(yaw: float, reference: float) -> float:
    """``yaw`` shifted by a multiple of pi (a parallel gripper is symmetric) to be closest to ``reference``."""
    return reference + float((yaw - reference + np.pi / 2) % np.pi - np.pi / 2)


def down_rotation(yaw: float) -> np.ndarray:
    """``(3, 3)`` control-site rotation pointing straight down with the finger axis at ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def site_yaw(mat: np.ndarray) -> float:
    """Yaw of the finger axis (site x axis) of a ``(3, 3)`` site rotation."""
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


def orientation_error(desired: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``(3,)`` axis-angle-like error rotating ``current`` towards ``desired`` (both ``(3, 3)``, world).

    Same formula as robosuite's ``orientation_error`` (small-angle approximation, Siciliano et al.).
    """
    return 0.5 * sum(np.cross(current[:, i], desired[:, i]) for i in range(3))


def quat_xyzw_to_mat(q: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation of a unit quaternion ``(x, y, z, w)``."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def boxes_overlap_2d(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex xy polygons given as ``(N, 2)`` corner arrays (in order)."""
    for poly in (a, b):
        n = len(poly)
        for i in range(n):
            edge = poly[(i + 1) % n] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def gripper_footprint(center: np.ndarray, yaw: float, open_width: float = 0.10, depth: float = 0.03) -> np.ndarray:
    """``(4, 2)`` xy corners of the open gripper seen from above (fingers along ``yaw``).

    The Panda hand is ~21 cm along the finger axis at the palm, but below the palm only the two fingers
    (``open_width`` apart, ~2 cm deep) reach down to grasp height.
    """
    f = np.array([np.cos(yaw), np.sin(yaw)]) * open_width / 2.0
    p = np.array([-np.sin(yaw), np.cos(yaw)]) * depth / 2.0
    return np.stack([center + f + p, center + f - p, center - f - p, center - f + p])
