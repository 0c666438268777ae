"""Skills on articulated fixtures and flat objects: twist a stove knob on, push an object along the table.

Small state machines over privileged :class:`SceneSnapshot` s, like :class:`sims.expert.pick_place.PickPlace`.
"""

from __future__ import annotations

import numpy as np

from sims.expert.geometry import footprint, site_yaw
from sims.expert.grasps import clearance
from sims.expert.motion import GRIP_CLOSE, GRIP_OPEN, servo, yaw_error
from sims.scene import SceneSnapshot

KNOB_ON = 0.5  # LIBERO FlatStove: on when the knob joint >= 0.5 rad
KNOB_TARGET = 0.75  # twist past the threshold
TWIST_RATE = 0.5  # yaw action while twisting (0.25 rad per step after robosuite's scaling)
INSET = 0.025  # m: Push pulls on the leading rim this far inside the object's edge


class _Machine:
    """Shared bookkeeping: phase, steps in phase, finished/failed flags, retries."""

    def __init__(self, max_attempts: int) -> None:
        self.phase = "start"
        self.finished = False
        self.failed = False
        self.max_attempts = max_attempts
        self._attempt = 0
        self._t = 0

    def _go(self, phase: str) -> None:
        self.phase, self._t = phase, 0

    def _retry(self) -> None:
        self._attempt += 1
        if self._attempt >= self.max_attempts:
            self.failed = self.finished = True
        self._go("start")

    def _finish(self) -> None:
        self.finished = True
        self._go("done")


class TurnKnob(_Machine):
    """Grasp a fixture's rotary knob from above and twist it (counter-clockwise) past ``target``.

    Args:
        fixture: the fixture (e.g. ``flat_stove_1``); its part ``<fixture>_button`` is the knob.
        joint: the knob's joint name (its value is the knob angle).
    """

    def __init__(self, fixture: str, joint: str, *, target: float = KNOB_TARGET, max_attempts: int = 3) -> None:
        super().__init__(max_attempts)
        self.fixture, self.joint, self.target = fixture, joint, target
        self._center = np.zeros(3)
        self._yaw = 0.0

    def _knob(self, snap: SceneSnapshot) -> tuple[np.ndarray, float]:
        body = snap.fixtures[self.fixture]
        lo, hi = body.parts.get(f"{self.fixture}_button", (body.lo, body.hi))
        return (np.asarray(lo) + np.asarray(hi)) / 2.0, float(hi[2])

    def act(self, snap: SceneSnapshot) -> np.ndarray:
        self._t += 1
        angle = snap.joints[self.joint]
        if self.phase == "start":
            if angle >= self.target:
                self._finish()
                return servo(snap, snap.eef_pos, None, GRIP_OPEN)
            center, top = self._knob(snap)
            self._center = np.array([center[0], center[1], top - 0.015])
            # the grip ridge turns with the knob; at angle 0 it lies across the fixture's x axis
            self._yaw = site_yaw(snap.fixtures[self.fixture].mat) + angle
            self._go("rise")
        above = self._center + np.array([0.0, 0.0, 0.08])
        if self.phase == "rise":
            if snap.eef_pos[2] > above[2] - 0.02 or self._t > 30:
                self._go("approach")
            return servo(snap, np.array([*snap.eef_pos[:2], above[2] + 0.01]), None, GRIP_OPEN)
        if self.phase == "approach":
            if (np.linalg.norm(snap.eef_pos - above) < 0.01 and yaw_error(snap, self._yaw) < 0.05) or self._t > 80:
                self._go("descend")
            return servo(snap, above, self._yaw, GRIP_OPEN)
        if self.phase == "descend":
            if np.linalg.norm(snap.eef_pos - self._center) < 0.006 or self._t > 40:
                self._go("close")
            return servo(snap, self._center, self._yaw, GRIP_OPEN, max_speed=0.5)
        if self.phase == "close":
            if self._t >= 10:
                self._go("twist")
            return servo(snap, self._center, self._yaw, GRIP_CLOSE)
        if self.phase == "twist":
            if angle >= self.target:
                self._go("release")
            elif self._t > 40:  # slipped: let go and try again
                self._retry()
                return servo(snap, snap.eef_pos + np.array([0, 0, 0.05]), None, GRIP_OPEN)
            a = servo(snap, self._center, None, GRIP_CLOSE)
            a[5] = TWIST_RATE
            return a
        if self.phase == "release":
            if self._t >= 6:
                self._go("retreat")
            return servo(snap, snap.eef_pos, None, GRIP_OPEN)
        if self.phase == "retreat":
            if self._t >= 12:
                self._finish()
            return servo(snap, snap.eef_pos + np.array([0, 0, 0.1]), None, GRIP_OPEN)
        return servo(snap, snap.eef_pos, None, GRIP_OPEN)


class Push(_Machine):
    """Push a flat object (e.g. a plate) over the table until its body position is in a target region.

    The closed gripper goes down into the middle of the object (below its rim) and moves towards the
    target, catching the *leading* rim from inside and dragging the object along (the far side of an
    object near a cabinet or at the edge of the arm's reach need not be reachable), re-approaching
    whenever the contact drifts sideways.

    Args:
        obj: the object to push; target: the region site name.
        tolerance: stop when the object's body xy is this close to the region centre (m).
    """

    def __init__(self, obj: str, target: str, *, tolerance: float = 0.015, max_attempts: int = 4) -> None:
        super().__init__(max_attempts)
        self.obj, self.target, self.tolerance = obj, target, tolerance
        self._dir = np.zeros(2)
        self._yaw = 0.0

    def _geometry(self, snap: SceneSnapshot) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(object xy, unit push direction, object radius along it, push height for the control site)."""
        body = snap.objects[self.obj]
        xy = body.pos[:2].copy()
        goal = snap.sites[self.target].pos[:2]
        d = goal - xy
        n = float(np.linalg.norm(d))
        u = d / n if n > 1e-6 else np.array([1.0, 0.0])
        fp = footprint(body)
        radius = float(np.max(np.abs((fp.corners() - fp.center) @ u)))
        return xy, u, radius, float(body.lo[2]) + 0.006  # tips press on the floor, below the rim

    def _choose_yaw(self, snap: SceneSnapshot, at: np.ndarray, z: float) -> float:
        """Finger yaw at the contact whose hand footprint clears neighbours best (across the push if tied)."""
        across = float(np.arctan2(self._dir[1], self._dir[0])) + np.pi / 2
        cands = [across + k * np.pi / 12 for k in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6)]
        scores = [clearance(snap, self.obj, at, y, z, 0.0) for y in cands]
        return float(cands[int(np.argmax(scores))])

    def act(self, snap: SceneSnapshot) -> np.ndarray:
        self._t += 1
        xy, u, radius, z = self._geometry(snap)
        dist = float(np.linalg.norm(snap.sites[self.target].pos[:2] - xy))
        if self.phase not in ("start", "retreat", "done") and dist < self.tolerance:
            self._go("retreat")
        if self.phase == "start":
            self._dir = u
            self._go("rise")
        behind = xy.copy()  # fingers go down in the middle
        if self.phase == "rise":
            top = float(snap.objects[self.obj].hi[2]) + 0.08
            if snap.eef_pos[2] > top - 0.02 or self._t > 30:
                self._go("approach")
            return servo(snap, np.array([*snap.eef_pos[:2], top]), None, GRIP_CLOSE)
        if self.phase == "approach" and self._t == 1:
            self._yaw = self._choose_yaw(snap, behind, z)
        yaw = self._yaw
        if self.phase == "approach":
            target = np.array([*behind, z + 0.08])
            if (np.linalg.norm(snap.eef_pos - target) < 0.015 and yaw_error(snap, yaw) < 0.1) or self._t > 80:
                self._go("descend")
            return servo(snap, target, yaw, GRIP_CLOSE)
        if self.phase == "descend":
            target = np.array([*behind, z])
            if abs(snap.eef_pos[2] - z) < 0.008 or self._t > 25:
                self._go("push")
            return servo(snap, target, yaw, GRIP_CLOSE, max_speed=0.6)
        if self.phase == "push":
            rel = snap.eef_pos[:2] - xy
            lateral = abs(float(rel @ np.array([-self._dir[1], self._dir[0]])))
            slipped = float(rel @ self._dir) > radius - 0.005  # rode over the leading rim
            if lateral > 0.04 or slipped or self._t > 150:  # drifted off the object's back: lift and re-approach
                self._retry()
                self._dir = u
                return servo(snap, snap.eef_pos + np.array([0, 0, 0.05]), None, GRIP_CLOSE)
            self._dir = u  # re-aim at the target as the object moves
            ahead = xy + u * (radius - INSET + min(dist, 0.05))
            return servo(snap, np.array([*ahead, z - 0.01]), yaw, GRIP_CLOSE, max_speed=0.6)
        if self.phase == "retreat":
            if self._t >= 12:
                self._finish()
            return servo(snap, snap.eef_pos + np.array([0, 0, 0.1]), None, GRIP_CLOSE)
        return servo(snap, snap.eef_pos, None, GRIP_OPEN)
