"""Turn a task's BDDL goal into a sequence of expert skills."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sims.expert.fixture_skills import Push, TurnKnob
from sims.expert.geometry import footprint
from sims.expert.grasps import MAX_GRASP_WIDTH
from sims.expert.pick_place import PickPlace, PlaceTarget
from sims.scene import SceneSnapshot

MIN_RIM_HEIGHT = 0.035  # m; flatter wide objects (plates) cannot be rim-grasped


class Skill(Protocol):
    """One expert behaviour: called every step until ``finished``."""

    finished: bool
    failed: bool
    phase: str

    def act(self, snap: SceneSnapshot) -> np.ndarray: ...


class UnsupportedGoalError(ValueError):
    """The scripted expert has no skill for a goal predicate (e.g. opening drawers)."""


def plan_skills(snap: SceneSnapshot) -> list[Skill]:
    """Skills that achieve ``snap.goal``: pick-and-place for every ``In``/``On`` predicate (a push for
    objects too wide and flat to grasp going onto a table region), a knob twist for ``TurnOn`` (first).

    Raises:
        UnsupportedGoalError: a predicate needs a skill the expert lacks (``Open``, ``Close``, placing
            into a closed drawer, ...); :func:`goal_supported` checks this without raising.
    """
    skills: list[Skill] = []
    for pred in snap.goal:
        head = pred[0]
        if head in ("in", "on") and len(pred) == 3 and pred[1] in snap.objects:
            obj, tgt = pred[1], pred[2]
            fp = footprint(snap.objects[obj])
            if 2 * float(min(fp.half)) > MAX_GRASP_WIDTH and fp.height < MIN_RIM_HEIGHT:
                if head == "on" and tgt in snap.sites and snap.sites[tgt].parent is None:
                    skills.append(Push(obj, tgt))  # a table region: slide it there
                    continue
                raise UnsupportedGoalError(f"{obj} is too wide and flat to grasp (and not pushable there): {pred}")
            if tgt in snap.sites:
                parent = snap.sites[tgt].parent
                if head == "in" and parent in snap.fixtures and _has_joints(snap, parent):
                    raise UnsupportedGoalError(f"{tgt} is inside an articulated fixture (needs opening): {pred}")
                target = PlaceTarget(tgt, "site", inside=head == "in")
            elif tgt in snap.objects or tgt in snap.fixtures:
                target = PlaceTarget(tgt, "body", inside=head == "in")
            else:
                raise UnsupportedGoalError(f"unknown target {tgt!r} in goal predicate {pred}")
            skills.append(PickPlace(obj, target))
        elif head == "turnon" and len(pred) == 2 and pred[1] in snap.fixtures:
            knobs = [j for j in snap.joints if j.startswith(pred[1])]
            if len(knobs) != 1:
                raise UnsupportedGoalError(f"{pred[1]} has no single knob joint ({knobs}): {pred}")
            skills.insert(0, TurnKnob(pred[1], knobs[0]))  # first: placed objects could block the knob
        else:
            raise UnsupportedGoalError(f"the scripted expert has no skill for goal predicate {pred}")
    return skills


def _has_joints(snap: SceneSnapshot, fixture: str) -> bool:
    return any(j.startswith(fixture) for j in snap.joints)


def snapshot_supported(snap: SceneSnapshot) -> bool:
    """Whether :func:`plan_skills` can plan the snapshot's goal."""
    try:
        plan_skills(snap)
    except UnsupportedGoalError:
        return False
    return True


def goal_supported(goal: tuple[tuple[str, ...], ...], objects: set[str] | None = None) -> bool:
    """Whether every predicate of ``goal`` is of a kind the expert handles (``In``/``On`` of a movable object,
    ``TurnOn`` of a fixture).

    This is a quick syntactic check; :func:`snapshot_supported` also checks geometry (graspability,
    closed containers).
    """
    for pred in goal:
        if pred[0] == "turnon" and len(pred) == 2:
            continue
        if pred[0] not in ("in", "on") or len(pred) != 3:
            return False
        if objects is not None and pred[1] not in objects:
            return False
    return True
