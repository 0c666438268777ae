"""The scripted expert as a batched :class:`sims.types.Policy`.

The expert is *privileged*: it reads each bound environment's :class:`SceneSnapshot` (object poses,
region sites, the BDDL goal) rather than images, so it is constructed with the environments it
drives (same process, e.g. inside one rollout worker) and ``act`` must be called with observations
of those environments in the same order. It restarts its plan whenever an environment's
``episode_index`` changes (i.e. after every ``reset``).

It is a closed-loop controller: ``chunk_size`` is 1 by default (``act`` returns ``(B, 1, 7)``);
larger chunks repeat the planned action and degrade precision. It never needs camera images
(``requires_images = False``), so callers can step with ``render=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sims.expert.motion import GRIP_OPEN, servo
from sims.expert.planner import Skill, UnsupportedGoalError, plan_skills
from sims.scene import SceneSnapshot
from sims.types import Observation

SETTLE_TOL = 0.001  # m per step: objects moving less are at rest
SETTLE_MAX = 60  # steps the expert waits at most for objects to come to rest before planning


class PrivilegedEnv(Protocol):
    """What the expert needs from an environment (``LiberoEnv`` provides it)."""

    episode_index: int

    def snapshot(self) -> SceneSnapshot: ...


@dataclass(frozen=True)
class NoiseConfig:
    """Behaviour-policy perturbations (SPEC §6): experience with both outcomes.

    Attributes:
        action_noise: std of Gaussian noise added to the 6 arm dims of every action (action units).
        perturb_prob: per-step probability of starting a random perturbation burst.
        perturb_steps: length of a burst; during it a random constant arm action replaces the expert's.
        gripper_flip_prob: per-step probability of inverting the gripper command.
    """

    action_noise: float = 0.0
    perturb_prob: float = 0.0
    perturb_steps: int = 8
    gripper_flip_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("action_noise", "perturb_prob", "gripper_flip_prob"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.perturb_steps < 1:
            raise ValueError(f"perturb_steps must be >= 1, got {self.perturb_steps}")

    @property
    def active(self) -> bool:
        return self.action_noise > 0 or self.perturb_prob > 0 or self.gripper_flip_prob > 0


class _Slot:
    """Per-environment controller state for one episode."""

    def __init__(self, snap: SceneSnapshot, rng: np.random.Generator) -> None:
        self.rng = rng
        self.burst_left = 0
        self.burst_action = np.zeros(6, dtype=np.float32)
        self.waited = 0  # steps spent waiting for objects to come to rest; -1 once they have
        self._last_pos: dict[str, np.ndarray] = {}
        try:
            self.skills: list[Skill] = plan_skills(snap)
            self.error: str | None = None
        except UnsupportedGoalError as exc:
            self.skills, self.error = [], str(exc)

    def act(self, snap: SceneSnapshot) -> np.ndarray:
        if not self._settled(snap):  # objects still falling (some init states drop them from ~0.5 m): hold
            return servo(snap, snap.eef_pos, None, GRIP_OPEN)
        while self.skills and self.skills[0].finished:
            self.skills.pop(0)
        if not self.skills:  # done (or unsupported): hold still, gripper open
            return servo(snap, snap.eef_pos, None, GRIP_OPEN)
        return self.skills[0].act(snap)

    def _settled(self, snap: SceneSnapshot) -> bool:
        """True once no object moved more than ``SETTLE_TOL`` since the last step (or after ``SETTLE_MAX`` steps)."""
        if self.waited < 0:
            return True
        pos = {name: body.pos.copy() for name, body in snap.objects.items()}
        moved = max((float(np.abs(p - self._last_pos[n]).max()) for n, p in pos.items() if n in self._last_pos),
                    default=np.inf)
        self._last_pos = pos
        self.waited += 1
        if moved < SETTLE_TOL or self.waited > SETTLE_MAX:
            self.waited = -1
            return True
        return False

    @property
    def phase(self) -> str:
        if self.waited >= 0 and self.skills:
            return "settle"
        return self.skills[0].phase if self.skills else ("unsupported" if self.error else "done")


class ScriptedExpert:
    """Privileged scripted expert over a batch of environments.

    Args:
        envs: the environments, in the order ``act`` receives their observations.
        chunk_size: actions per ``act`` call (K); 1 keeps the controller closed-loop.
        noise: optional :class:`NoiseConfig` (behaviour policy for rollouts).
        seed: base seed; each episode's noise stream is derived from (seed, task, init state, reset seed).
        name: recorded as the policy name of episodes it makes.
    """

    requires_images = False

    def __init__(
        self,
        envs: Sequence[PrivilegedEnv],
        *,
        chunk_size: int = 1,
        noise: NoiseConfig | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.envs = list(envs)
        self.chunk_size = chunk_size
        self.noise = noise or NoiseConfig()
        self.seed = seed
        self.name = name or ("scripted_expert_noisy" if self.noise.active else "scripted_expert")
        self._slots: list[_Slot | None] = [None] * len(self.envs)
        self._episodes = [-1] * len(self.envs)
        self.last_clean_actions: np.ndarray | None = None

    def act(self, observations: Sequence[Observation], instructions: Sequence[str]) -> np.ndarray:
        """``(B, K, 7)`` float32 actions for the bound environments (observations are not needed)."""
        if len(observations) != len(self.envs):
            raise ValueError(f"got {len(observations)} observations for {len(self.envs)} bound envs")
        clean = np.zeros((len(self.envs), self.chunk_size, 7), dtype=np.float32)
        out = np.zeros_like(clean)
        for i, env in enumerate(self.envs):
            snap = env.snapshot()
            slot = self._slot(i, env, snap)
            a = slot.act(snap)
            clean[i] = a
            out[i] = self._perturb(slot, a)
        self.last_clean_actions = clean
        return out

    def phase(self, index: int) -> str:
        """Current skill phase of environment ``index`` (for logs and tests)."""
        slot = self._slots[index]
        return slot.phase if slot is not None else "idle"

    def unsupported_reason(self, index: int) -> str | None:
        slot = self._slots[index]
        return slot.error if slot is not None else None

    def _slot(self, i: int, env: PrivilegedEnv, snap: SceneSnapshot) -> _Slot:
        slot = self._slots[i]
        if slot is None or self._episodes[i] != env.episode_index:
            # noise depends on (expert seed, episode reset args) when the env exposes them, so an episode
            # replays identically wherever it runs; otherwise on (seed, slot, episode counter)
            args = getattr(env, "last_reset_args", None)
            key = [self.seed, *args] if args is not None else [self.seed, i, max(env.episode_index, 0)]
            rng = np.random.default_rng(np.random.SeedSequence([abs(int(k)) for k in key]))
            slot = _Slot(snap, rng)
            self._slots[i], self._episodes[i] = slot, env.episode_index
        return slot

    def _perturb(self, slot: _Slot, action: np.ndarray) -> np.ndarray:
        cfg, rng = self.noise, slot.rng
        a = np.array(action, dtype=np.float32)
        if not cfg.active:
            return a
        if slot.burst_left == 0 and cfg.perturb_prob > 0 and rng.random() < cfg.perturb_prob:
            slot.burst_left = cfg.perturb_steps
            slot.burst_action = rng.uniform(-1, 1, size=6).astype(np.float32)
        if slot.burst_left > 0:
            a[:6] = slot.burst_action
            slot.burst_left -= 1
        if cfg.action_noise > 0:
            a[:6] += rng.normal(0.0, cfg.action_noise, size=6).astype(np.float32)
        if cfg.gripper_flip_prob > 0 and rng.random() < cfg.gripper_flip_prob:
            a[6] = -a[6]
        return np.clip(a, -1.0, 1.0)
