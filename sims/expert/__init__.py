"""Privileged-state scripted expert for LIBERO: pick-and-place (``In``/``On``), pushing flat objects, stove knobs."""

from sims.expert.planner import UnsupportedGoalError, goal_supported, plan_skills, snapshot_supported
from sims.expert.policy import NoiseConfig, PrivilegedEnv, ScriptedExpert

__all__ = [
    "NoiseConfig",
    "PrivilegedEnv",
    "ScriptedExpert",
    "UnsupportedGoalError",
    "goal_supported",
    "plan_skills",
    "snapshot_supported",
]
