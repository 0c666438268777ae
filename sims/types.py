"""Types shared by every simulator adapter, the scripted expert, the rollout engine and policies.

Nothing here imports a simulator, so policies (e.g. ``cosmos_policy``) can depend on these types
without pulling MuJoCo in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Observation:
    """One observation of one environment.

    Attributes:
        images: camera name -> ``(H, W, 3)`` uint8 image, upright (row 0 is the top). May be empty on
            steps where cameras were not rendered (rollouts render only at chunk boundaries).
        proprio: ``(P,)`` float32 robot proprioception (layout fixed per simulator, see its adapter).
        object_state: optional ``(S,)`` float32 privileged object state (scripted expert, probes).
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    object_state: np.ndarray | None = None


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    done: bool
    success: bool
    info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """What an environment is asked to do."""

    suite: str
    task_id: int
    instruction: str
    max_steps: int
    num_init_states: int


@runtime_checkable
class Env(Protocol):
    """Small environment protocol every adapter implements (LIBERO, RoboCasa, unit-test fakes)."""

    camera_names: tuple[str, ...]
    action_dim: int
    proprio_dim: int

    def task_spec(self, task_id: int) -> TaskSpec: ...

    def reset(self, task_id: int, init_state_index: int, seed: int) -> Observation: ...

    def step(self, action: np.ndarray, render: bool = True) -> StepResult: ...

    def render(self) -> Mapping[str, np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a batch of observations to a batch of action chunks.

    ``act`` returns an array of shape ``(B, K, A)``: K actions per environment, executed fully before
    the next query.
    """

    def act(self, observations: Sequence[Observation], instructions: Sequence[str]) -> np.ndarray: ...
