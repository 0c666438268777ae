"""Planner and fixture skills on synthetic snapshots (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from sims.expert import UnsupportedGoalError, plan_skills
from sims.expert.fixture_skills import Push, TurnKnob
from sims.expert.geometry import down_rotation
from sims.expert.pick_place import PickPlace
from sims.scene import BodyState, SceneSnapshot, SiteState


def _box(center: tuple[float, float, float], half: tuple[float, float, float], **parts) -> BodyState:
    c, h = np.asarray(center, float), np.asarray(half, float)
    return BodyState(c.copy(), np.array([0, 0, 0, 1.0]), c - h, c + h, parts, np.eye(3), -h, h)


def _snap(goal, joints=None, eef=(0.0, 0.0, 1.1)) -> SceneSnapshot:
    q = np.array([1.0, 0, 0, 0])  # xyzw of down_rotation(0): 180 deg about x
    assert np.allclose(down_rotation(0.0), np.diag([1, -1, -1]))
    knob = (np.array([-0.45, 0.17, 0.905]), np.array([-0.37, 0.25, 0.955]))
    return SceneSnapshot(
        objects={
            "plate_1": _box((0.05, -0.03, 0.91), (0.069, 0.069, 0.01)),
            "bowl_1": _box((-0.1, 0.0, 0.92), (0.03, 0.03, 0.025)),
        },
        fixtures={"flat_stove_1": _box((-0.41, 0.21, 0.93), (0.1, 0.1, 0.025), flat_stove_1_button=knob)},
        sites={
            "table_front_region": SiteState(
                np.array([-0.05, 0.21, 0.895]), np.eye(3), np.array([0.04, 0.04, 0.007]), None
            ),
            "flat_stove_1_cook_region": SiteState(
                np.array([-0.26, 0.21, 0.905]), np.eye(3), np.array([0.075, 0.075, 0.002]), "flat_stove_1"
            ),
        },
        joints=joints if joints is not None else {"flat_stove_1_button": 0.0},
        eef_pos=np.asarray(eef, float),
        eef_quat=q,
        gripper_qpos=np.array([0.04, -0.04]),
        goal=goal,
        base_pos=np.array([-0.66, 0.0, 0.912]),
    )


def test_planner_turns_knob_first_and_pushes_flat_objects_on_table_regions() -> None:
    skills = plan_skills(_snap((("on", "bowl_1", "flat_stove_1_cook_region"), ("turnon", "flat_stove_1"))))
    assert [type(s) for s in skills] == [TurnKnob, PickPlace]
    skills = plan_skills(_snap((("on", "plate_1", "table_front_region"),)))
    assert [type(s) for s in skills] == [Push]
    with pytest.raises(UnsupportedGoalError):  # a plate can't be pushed onto a fixture's region
        plan_skills(_snap((("on", "plate_1", "flat_stove_1_cook_region"),)))
    with pytest.raises(UnsupportedGoalError):
        plan_skills(_snap((("open", "wooden_cabinet_1_middle_region"),)))


def test_turn_knob_skips_a_knob_already_on_and_twists_counter_clockwise() -> None:
    done = TurnKnob("flat_stove_1", "flat_stove_1_button")
    done.act(_snap((), {"flat_stove_1_button": 1.4}))
    assert done.finished and not done.failed
    skill = TurnKnob("flat_stove_1", "flat_stove_1_button")
    snap = _snap(())
    a = skill.act(snap)
    assert skill.phase in ("rise", "approach") and a.shape == (7,) and a[6] < 0  # gripper open on the way
    over = _snap((), eef=(-0.41, 0.21, 0.955 - 0.015 + 0.08))
    for _ in range(3):
        skill.act(over)
    assert skill.phase in ("approach", "descend")
    skill.phase, skill._t = "twist", 0
    a = skill.act(_snap((), eef=(-0.41, 0.21, 0.94)))
    assert a[5] > 0 and a[6] > 0  # yaw counter-clockwise while closed
    for _ in range(45):  # the knob never turns: give up this attempt and retry
        skill.act(_snap((), eef=(-0.41, 0.21, 0.94)))
    assert skill.phase in ("start", "rise") and skill._attempt == 1


def test_push_drags_towards_the_region_and_stops_there() -> None:
    skill = Push("plate_1", "table_front_region")
    skill.act(_snap(()))
    skill.phase, skill._t = "push", 0
    a = skill.act(_snap((), eef=(0.05, -0.03, 0.916)))  # fingers in the middle of the plate
    direction = np.array([-0.1, 0.24]) / np.linalg.norm([-0.1, 0.24])
    assert float(a[:2] @ direction) > 0.2  # moves towards the region
    assert a[6] > 0  # gripper closed
    snap = _snap(())
    moved = {**snap.objects, "plate_1": _box((-0.05, 0.205, 0.91), (0.069, 0.069, 0.01))}
    at_goal = SceneSnapshot(
        moved,
        snap.fixtures,
        snap.sites,
        snap.joints,
        snap.eef_pos,
        snap.eef_quat,
        snap.gripper_qpos,
        snap.goal,
        snap.base_pos,
    )
    skill.act(at_goal)
    assert skill.phase == "retreat"
