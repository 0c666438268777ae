"""Turn a task's BDDL goal into a sequence of expert skills."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sims.expert.pick_place import PickPlace, PlaceTarget
from sims.scene import SceneSnapshot


class Skill(Protocol):
    """One expert behaviour: called every step until ``finished``."""

    finished: bool
    failed: bool
    phase: str

    def act(self, snap: SceneSnapshot) -> np.ndarray: ...


class UnsupportedGoalError(ValueError):
    """The scripted expert has no skill for a goal predicate (e.g. opening drawers)."""


def plan_skills(snap: SceneSnapshot) -> list[Skill]:
    """Skills that achieve ``snap.goal`` in order (pick-and-place for every ``In``/``On`` predicate).

    Raises:
        UnsupportedGoalError: a predicate needs a skill the expert lacks (``Open``, ``Close``,
            ``Turnon``, ...); :func:`goal_supported` checks this without raising.
    """
    skills: list[Skill] = []
    for pred in snap.goal:
        head = pred[0]
        if head in ("in", "on") and len(pred) == 3 and pred[1] in snap.objects:
            obj, tgt = pred[1], pred[2]
            if tgt in snap.sites:
                target = PlaceTarget(tgt, "site", inside=head == "in")
            elif tgt in snap.objects or tgt in snap.fixtures:
                target = PlaceTarget(tgt, "body", inside=head == "in")
            else:
                raise UnsupportedGoalError(f"unknown target {tgt!r} in goal predicate {pred}")
            skills.append(PickPlace(obj, target))
        else:
            raise UnsupportedGoalError(f"the scripted expert has no skill for goal predicate {pred}")
    return skills


def goal_supported(goal: tuple[tuple[str, ...], ...], objects: set[str] | None = None) -> bool:
    """Whether every predicate of ``goal`` maps to a skill (optionally checking the moved object exists)."""
    for pred in goal:
        if pred[0] not in ("in", "on") or len(pred) != 3:
            return False
        if objects is not None and pred[1] not in objects:
            return False
    return True
