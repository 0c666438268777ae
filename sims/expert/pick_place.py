"""Pick-and-place skill: approach, grasp, lift, carry (steering the *object*), lower, release.

A small state machine over privileged :class:`SceneSnapshot` s; one instance per object to move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sims.expert.geometry import footprint, site_yaw
from sims.expert.grasps import Grasp, choose_grasp
from sims.expert.motion import GRIP_CLOSE, GRIP_OPEN, eef_rotation, gripper_width, servo, yaw_error
from sims.scene import SceneSnapshot

CLEAR = 0.05  # m vertical clearance over obstacles while carrying


@dataclass(frozen=True)
class PlaceTarget:
    """Where the object goes: a BDDL region site (``site``) or another body (``body``) by name.

    ``inside``: the goal is ``In`` (drop into a container region) rather than ``On``.
    """

    name: str
    kind: str  # "site" | "body"
    inside: bool = False

    def xy(self, snap: SceneSnapshot) -> np.ndarray:
        if self.kind == "site":
            return snap.sites[self.name].pos[:2].copy()
        return snap.body(self.name).pos[:2].copy()

    def surface_z(self, snap: SceneSnapshot) -> float:
        """Estimated height the object's bottom will rest on."""
        if self.kind == "site":
            site = snap.sites[self.name]
            return float(site.pos[2] - site.size[2]) if self.inside else float(site.pos[2] + site.size[2])
        body = snap.body(self.name)
        return float(body.lo[2] + 0.35 * (body.hi[2] - body.lo[2]))


class PickPlace:
    """Move object ``obj`` onto/into ``target``. Call :meth:`act` every step until :attr:`finished`."""

    def __init__(self, obj: str, target: PlaceTarget, *, max_attempts: int = 3) -> None:
        self.obj = obj
        self.target = target
        self.max_attempts = max_attempts
        self.phase = "start"
        self.finished = False
        self.failed = False
        self._attempt = 0
        self._grasp: Grasp | None = None
        self._t = 0  # steps in the current phase
        self._hold_z = 0.0
        self._obj_z0 = 0.0
        self._last_obj_z = 0.0
        self._stall = 0
        self._last_width = 1.0

    def _go(self, phase: str) -> None:
        self.phase, self._t, self._stall = phase, 0, 0

    # -------------------------------------------------------------------- helpers
    def _travel_z(self, snap: SceneSnapshot, hang: float) -> float:
        """Site height so that something hanging ``hang`` m below it clears every obstacle near the path."""
        obj = snap.objects[self.obj]
        start, goal = obj.pos[:2], self.target.xy(snap)
        seg = goal - start
        top = self._obj_z0
        for name, body in list(snap.objects.items()) + list(snap.fixtures.items()):
            if name == self.obj:
                continue
            c = footprint(body).center if name in snap.objects else body.center[:2]
            u = np.clip(np.dot(c - start, seg) / max(np.dot(seg, seg), 1e-9), 0.0, 1.0)
            if np.linalg.norm(start + u * seg - c) < 0.15 + float(np.max(body.half[:2])):
                top = max(top, float(body.hi[2]))
        return top + CLEAR + hang

    def _path_top(self, snap: SceneSnapshot, start: np.ndarray, goal: np.ndarray) -> float:
        """Highest top of the other bodies within ~10 cm of the xy segment ``start``-``goal`` (-inf: none)."""
        seg, top = goal - start, -np.inf
        for name, body in list(snap.objects.items()) + list(snap.fixtures.items()):
            if name == self.obj:
                continue
            c = footprint(body).center if name in snap.objects else body.center[:2]
            u = np.clip(np.dot(c - start, seg) / max(np.dot(seg, seg), 1e-9), 0.0, 1.0)
            if np.linalg.norm(start + u * seg - c) < 0.10 + float(np.max(body.half[:2])):
                top = max(top, float(body.hi[2]))
        return top

    def _steer(self, snap: SceneSnapshot, z: float) -> np.ndarray:
        """Site target that puts the held object's body position over the target xy at site height ``z``."""
        obj = snap.objects[self.obj]
        offset = obj.pos[:2] - snap.eef_pos[:2]
        return np.array([*(self.target.xy(snap) - offset), z])

    # -------------------------------------------------------------------- main
    def act(self, snap: SceneSnapshot) -> np.ndarray:
        """``(7,)`` action for this step."""
        self._t += 1
        obj = snap.objects[self.obj]
        yaw_now = site_yaw(eef_rotation(snap))
        if self.phase == "start":
            self._grasp = choose_grasp(snap, self.obj, yaw_now, self._attempt)
            self._obj_z0 = float(obj.lo[2])
            self._go("rise")
        assert self._grasp is not None
        gpos, gyaw = self._grasp.world(obj)
        approach_z = gpos[2] + 0.10
        if self.phase == "rise":  # straight up before moving sideways
            z = max(approach_z, snap.eef_pos[2])
            if np.linalg.norm(snap.eef_pos[:2] - gpos[:2]) < 0.02 or snap.eef_pos[2] > approach_z - 0.02:
                self._go("approach")
            return servo(snap, np.array([*snap.eef_pos[:2], z + 0.01]), None, GRIP_OPEN)
        if self.phase == "approach":  # over obstacles on the way (e.g. a basket just filled), then down
            far = np.linalg.norm(snap.eef_pos[:2] - gpos[:2]) > 0.03
            z = max(approach_z, self._path_top(snap, snap.eef_pos[:2], gpos[:2]) + CLEAR) if far else approach_z
            target = np.array([*gpos[:2], z])
            err = np.linalg.norm(snap.eef_pos - target)
            if (err < 0.015 and yaw_error(snap, gyaw) < 0.08) or self._t > 80:
                self._go("descend")
            return servo(snap, target, gyaw, GRIP_OPEN)
        if self.phase == "descend":
            err = snap.eef_pos - gpos
            self._stall = self._stall + 1 if self._last_obj_z - float(snap.eef_pos[2]) < 0.001 else 0
            self._last_obj_z = float(snap.eef_pos[2])
            stalled = self._stall >= 4 and abs(err[2]) < 0.03 and np.linalg.norm(err[:2]) < 0.01
            if np.linalg.norm(err) < 0.008 or stalled or self._t > 60:
                self._go("close")
            return servo(snap, gpos, gyaw, GRIP_OPEN, max_speed=0.6)
        if self.phase == "close":  # until the fingers stop moving: lifting a half-closed grip tilts rim grasps
            width = gripper_width(snap)
            settled = self._t >= 10 and abs(width - self._last_width) < 0.0004
            self._last_width = width
            if settled or self._t >= 25:
                self._hold_z = float(snap.eef_pos[2])
                self._go("lift")
            return servo(snap, gpos, gyaw, GRIP_CLOSE)
        if self.phase == "lift":
            hang = float(snap.eef_pos[2] - obj.lo[2])
            z = self._travel_z(snap, hang)
            lifted = float(obj.lo[2]) - self._obj_z0
            if snap.eef_pos[2] - self._hold_z > 0.05 and (lifted < 0.025 or gripper_width(snap) < 0.002):
                return self._regrasp(snap)
            if snap.eef_pos[2] > z - 0.02:
                self._go("carry")
            return servo(snap, np.array([*snap.eef_pos[:2], z]), None, GRIP_CLOSE)
        if self.phase == "carry":
            if float(obj.lo[2]) - self._obj_z0 < 0.01 and gripper_width(snap) < 0.002:
                return self._regrasp(snap)
            hang = float(snap.eef_pos[2] - obj.lo[2])
            target = self._steer(snap, self._travel_z(snap, hang))
            xy_err = np.linalg.norm(obj.pos[:2] - self.target.xy(snap))
            if xy_err < 0.012 or (self._t > 150 and xy_err < 0.03):
                self._last_obj_z = float(obj.lo[2])
                self._go("lower")
            return servo(snap, target, None, GRIP_CLOSE)
        if self.phase == "lower":
            surface = self.target.surface_z(snap)
            gap = float(obj.lo[2]) - surface
            self._stall = self._stall + 1 if self._last_obj_z - float(obj.lo[2]) < 0.0015 else 0
            self._last_obj_z = float(obj.lo[2])
            if gap < (0.03 if self.target.inside else 0.008) or (self._stall >= 4 and self._t > 6):
                self._go("release")
            z = snap.eef_pos[2] - max(gap, 0.0) - 0.01
            return servo(snap, self._steer(snap, z), None, GRIP_CLOSE, max_speed=0.5)
        if self.phase == "release":
            if self._t >= 8:
                self._go("retreat")
            return servo(snap, snap.eef_pos, None, GRIP_OPEN)
        if self.phase == "retreat":
            if self._t >= 12:
                self.finished = True
                self._go("done")
            return servo(snap, snap.eef_pos + np.array([0, 0, 0.1]), None, GRIP_OPEN)
        return servo(snap, snap.eef_pos, None, GRIP_OPEN)

    def _regrasp(self, snap: SceneSnapshot) -> np.ndarray:
        self._attempt += 1
        if self._attempt >= self.max_attempts:
            self.failed = True
            self.finished = True
        self._go("start")
        return servo(snap, snap.eef_pos + np.array([0, 0, 0.05]), None, GRIP_OPEN)
