"""Privileged scene snapshots for the scripted expert (pure data + a MuJoCo reader).

A :class:`SceneSnapshot` is what the expert sees: the world poses and world-axis bounding boxes of
every task object and fixture, the pose/size of every BDDL region site, articulated joint values,
the end effector and the task goal. Quaternions are ``(x, y, z, w)`` (robosuite convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Layouts of an environment's privileged ``object_state``: every body and joint (task-dependent length), or the
#: goal predicates' objects and targets in a fixed length (:data:`GOAL_STATE_DIM`, a multi-task model's input).
OBJECT_STATE_LAYOUTS = ("full", "goal")
GOAL_SLOTS = 2  # goal predicates described (LIBERO goals have one or two)
GOAL_SLOT_DIM = 10  # object pose (7) + target position (3)
GOAL_STATE_DIM = GOAL_SLOTS * GOAL_SLOT_DIM


@dataclass(frozen=True)
class BodyState:
    """One object or fixture: root-body pose plus world AABB of its collision geoms.

    Attributes:
        pos: ``(3,)`` root body position (m, world).
        quat: ``(4,)`` root body orientation, xyzw.
        lo / hi: ``(3,)`` world axis-aligned bounding box of the collision geoms (whole articulated body).
        parts: per child body with collision geoms, ``name -> (lo (3,), hi (3,))`` world AABB (fixtures).
        mat: ``(3, 3)`` root body rotation (columns = body axes in world).
        local_lo / local_hi: ``(3,)`` AABB of the collision geoms in the root body frame (an oriented box).
    """

    pos: np.ndarray
    quat: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    parts: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    mat: np.ndarray = field(default_factory=lambda: np.eye(3))
    local_lo: np.ndarray = field(default_factory=lambda: np.zeros(3))
    local_hi: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2.0

    @property
    def half(self) -> np.ndarray:
        return (self.hi - self.lo) / 2.0


@dataclass(frozen=True)
class SiteState:
    """A BDDL region site: world position, ``(3, 3)`` rotation, half-size ``(3,)`` and parent name."""

    pos: np.ndarray
    mat: np.ndarray
    size: np.ndarray
    parent: str | None


@dataclass(frozen=True)
class SceneSnapshot:
    """Everything the privileged expert needs at one instant.

    Attributes:
        objects: movable objects by BDDL name, BDDL order.
        fixtures: fixtures (cabinets, stoves, racks) by BDDL name.
        sites: BDDL region sites by name.
        joints: articulated fixture joint values by MuJoCo joint name.
        eef_pos: ``(3,)``; eef_quat: ``(4,)`` xyzw; gripper_qpos: ``(2,)`` finger joints.
        goal: BDDL goal as tuples, e.g. ``(("in", "ketchup_1", "basket_1_contain_region"),)``.
        base_pos: ``(3,)`` robot base position.
    """

    objects: Mapping[str, BodyState]
    fixtures: Mapping[str, BodyState]
    sites: Mapping[str, SiteState]
    joints: Mapping[str, float]
    eef_pos: np.ndarray
    eef_quat: np.ndarray
    gripper_qpos: np.ndarray
    goal: tuple[tuple[str, ...], ...]
    base_pos: np.ndarray

    def body(self, name: str) -> BodyState:
        """An object or fixture by name (KeyError naming the known ones otherwise)."""
        if name in self.objects:
            return self.objects[name]
        if name in self.fixtures:
            return self.fixtures[name]
        raise KeyError(f"no body {name!r}; objects={list(self.objects)} fixtures={list(self.fixtures)}")


def _descendants(model: Any, root: int) -> list[int]:
    parents = np.asarray(model.body_parentid)
    out, frontier = [root], [root]
    while frontier:
        frontier = [int(b) for b in np.nonzero(np.isin(parents, frontier))[0] if int(b) not in out]
        out.extend(frontier)
    return out


class GeomIndex:
    """Precomputed collision-geom ids per body subtree of one MuJoCo model (built once per env build)."""

    def __init__(self, model: Any, roots: Mapping[str, int]) -> None:
        self._model = model
        geom_body = np.asarray(model.geom_bodyid)
        collide = (np.asarray(model.geom_contype) != 0) | (np.asarray(model.geom_conaffinity) != 0)
        self.geoms: dict[str, np.ndarray] = {}
        self.parts: dict[str, dict[str, np.ndarray]] = {}
        for name, root in roots.items():
            bodies = _descendants(model, root)
            ids = np.nonzero(np.isin(geom_body, bodies) & collide)[0]
            if ids.size == 0:
                ids = np.nonzero(np.isin(geom_body, bodies))[0]
            self.geoms[name] = ids
            parts: dict[str, np.ndarray] = {}
            for b in bodies:
                pid = np.nonzero((geom_body == b) & collide)[0]
                if pid.size:
                    parts[str(model.body(b).name)] = pid
            self.parts[name] = parts

    def aabb(
        self, data: Any, ids: np.ndarray, frame: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """AABB ``(lo (3,), hi (3,))`` of the geoms ``ids`` (from MuJoCo's local geom AABBs).

        Args:
            frame: ``(origin (3,), rotation (3, 3))``; the box is axis-aligned in that frame (world if None).
        """
        if ids.size == 0:
            z = np.zeros(3)
            return z, z
        local = np.asarray(self._model.geom_aabb)[ids]  # (G, 6): center(3), half-size(3) in geom frame
        rot = np.asarray(data.geom_xmat)[ids].reshape(-1, 3, 3)
        pos = np.asarray(data.geom_xpos)[ids]
        if frame is not None:
            origin, frot = frame
            rot = np.einsum("ji,gjk->gik", frot, rot)
            pos = (pos - origin) @ frot
        center = pos + np.einsum("gij,gj->gi", rot, local[:, :3])
        half = np.einsum("gij,gj->gi", np.abs(rot), local[:, 3:])
        return (center - half).min(axis=0), (center + half).max(axis=0)


def parse_goal(goal_state: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """Normalise LIBERO's parsed ``goal_state`` (list of ``[pred, arg, ...]``) to lower-case tuples."""
    return tuple(tuple(str(t).lower() for t in pred) for pred in goal_state)
