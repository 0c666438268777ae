"""LIBERO adapter behind :class:`sims.types.Env` (offline ``rpent-libero`` on robosuite 1.5.2).

Layouts (fixed for every LIBERO suite):

- action ``(7,)``: OSC delta pose ``[dx, dy, dz, dax, day, daz]`` in [-1, 1] (robosuite scales to 5 cm
  and 0.5 rad per step, robot-base frame), then gripper: -1 open, +1 close.
- proprio ``(9,)`` float32: ``gripper_qpos (2) | eef_pos (3) | eef_quat (4, xyzw)``.
- object_state, privileged, one of two layouts (``object_state=`` of the constructor):

  - ``"full"`` ``(7 * (n_objects + n_fixtures) + n_joints,)`` float32: for every BDDL object then every
    fixture, in BDDL document order, ``pos (3) | quat (4, xyzw)``; then the value of every articulated
    fixture joint (drawers, doors, knobs) in MuJoCo order. Its length depends on the task.
  - ``"goal"`` ``(20,)`` float32, the same length for every task (what a multi-task model can take as input):
    one 10-float slot for each of the first two BDDL goal predicates, zeros when absent. ``In``/``On``:
    the moved object's ``pos (3) | quat (4, xyzw)`` and the target's position ``(3)`` (region site or body);
    ``Open``/``Close``/``TurnOn``/``TurnOff``: the fixture joint's value, then zeros, then the fixture's position
    (a region argument, e.g. a drawer's: zeros, then the region's position).

  :meth:`LiberoEnv.object_state_layout` names the slices.
- images: ``{"agentview", "eye_in_hand"} -> (H, W, 3)`` uint8, upright, rendered only on request.

Episodes: ``reset`` loads LIBERO's fixed init state, then runs ``settle_steps`` no-op steps (gripper
open; not counted). ``step`` reports ``done`` at the first success or at the suite's step limit
(220/280/300/520, libero_90 400).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sims.libero_runtime import (
    LIBERO_CAMERAS,
    LIBERO_MAX_STEPS,
    LIBERO_SUITES,
    init_states,
    num_tasks,
    prepare_libero,
    task_info,
)
from sims.scene import (
    GOAL_SLOT_DIM,
    GOAL_SLOTS,
    GOAL_STATE_DIM,
    OBJECT_STATE_LAYOUTS,
    BodyState,
    GeomIndex,
    SceneSnapshot,
    SiteState,
    parse_goal,
)
from sims.sim_state import RobosuiteCameras
from sims.types import Observation, StepResult, TaskSpec

NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


@contextlib.contextmanager
def _global_numpy_seed(key: tuple[int, ...]) -> Iterator[None]:
    """Seed NumPy's global RNG from ``key`` for the block, then restore the caller's state.

    LIBERO's region samplers draw fixture placements from ``np.random`` (not robosuite 1.5's ``env.rng``) when a
    scene is built or reset, and fixtures are not part of LIBERO's init states. Without this, an episode's
    cabinet or stove sits a few millimetres elsewhere depending on which episodes ran before it in the same
    process, so the same (task, init state, seed) could succeed in one sweep and fail in another.
    """
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence([abs(int(k)) for k in key]).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(saved)


class LiberoEnv(RobosuiteCameras):
    """One reusable LIBERO environment for one suite (rebuilds the scene only when the task changes).

    Args:
        suite: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` or ``libero_90``.
        image_size: rendered camera images are ``(image_size, image_size, 3)``.
        settle_steps: no-op steps after loading the init state (not counted in the step limit).
        max_steps: override of the suite's step limit.
        antialias: render as robosuite does (4x multisampling); False halves the cost of a frame on a CPU-only
            machine (see :class:`sims.sim_state.RobosuiteCameras`).
        mesh_resolution: render coarser visual meshes (:mod:`sims.mesh_detail`; None: as shipped). Physics is
            unchanged; demos and evaluation must use the same setting.
        object_state: the privileged state's layout, ``"full"`` (every body and joint) or ``"goal"`` (fixed-size,
            the goal predicates' objects and targets); see the module docstring.
    """

    camera_names: tuple[str, ...] = tuple(LIBERO_CAMERAS)
    _cameras = LIBERO_CAMERAS
    action_dim: int = 7
    proprio_dim: int = 9

    def __init__(
        self, suite: str, image_size: int = 128, *, settle_steps: int = 10, max_steps: int | None = None,
        antialias: bool = True, object_state: str = "full", mesh_resolution: int | None = None,
    ) -> None:
        if object_state not in OBJECT_STATE_LAYOUTS:
            raise ValueError(f"object_state must be one of {OBJECT_STATE_LAYOUTS}, got {object_state!r}")
        if suite not in LIBERO_MAX_STEPS:
            raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(LIBERO_SUITES)}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.suite = suite
        self.image_size = int(image_size)
        self.antialias = bool(antialias)
        self.mesh_resolution = mesh_resolution
        self.object_state_kind = object_state
        self.settle_steps = int(settle_steps)
        self.max_steps = int(max_steps) if max_steps is not None else LIBERO_MAX_STEPS[suite]
        self._env: Any = None
        self._task_id: int | None = None
        self._geoms: GeomIndex | None = None
        self._names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._joint_qpos: list[tuple[str, int]] = []
        self._goal_slots: list[_GoalSlot] = []
        self._steps = 0
        self._done = True
        self._success = False
        self.episode_index = 0  # increments on every reset (the expert uses it to restart its plan)
        self.last_reset_args: tuple[int, int, int] | None = None  # (task_id, init_state_index, seed)
        self.last_reset_s = 0.0

    # ----------------------------------------------------------------- task info
    @property
    def num_tasks(self) -> int:
        return num_tasks(self.suite)

    @property
    def task_id(self) -> int | None:
        return self._task_id

    def task_spec(self, task_id: int) -> TaskSpec:
        info = task_info(self.suite, task_id)
        return TaskSpec(
            suite=self.suite,
            task_id=task_id,
            instruction=info.instruction,
            max_steps=self.max_steps,
            num_init_states=int(init_states(self.suite, task_id).shape[0]),
        )

    # ----------------------------------------------------------------- episode API
    def reset(self, task_id: int, init_state_index: int, seed: int) -> Observation:
        """Load init state ``init_state_index`` of ``task_id``, settle, and return the first observation."""
        t0 = time.perf_counter()
        states = init_states(self.suite, task_id)
        if not 0 <= init_state_index < states.shape[0]:
            raise ValueError(f"init_state_index {init_state_index} out of range ({states.shape[0]} states)")
        if self._env is None or self._task_id != task_id:
            self._build(task_id)
        env = self._env
        env.env.rng = np.random.default_rng(seed)  # robosuite 1.5 samplers; init state overrides placement
        with contextlib.redirect_stdout(io.StringIO()), _global_numpy_seed((task_id, seed)):
            env.reset()
            env.set_init_state(states[init_state_index])
        for _ in range(self.settle_steps):
            env.step(NOOP_ACTION)
        self._steps, self._done, self._success = 0, False, False
        self.episode_index += 1
        self.last_reset_args = (task_id, init_state_index, seed)
        self.last_reset_s = time.perf_counter() - t0
        return self._observation(render=True)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        """Apply one ``(7,)`` action; cameras are rendered only if ``render``.

        Returns:
            StepResult with ``done`` at first success or at the step limit; ``info`` has ``t`` and
            ``truncated``.
        """
        if self._env is None or self._done:
            raise RuntimeError("episode is over (or never started): call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        self._success = bool(self._env.check_success())
        truncated = not self._success and self._steps >= self.max_steps
        self._done = self._success or truncated
        obs = self._observation(render=render)
        return StepResult(obs, self._done, self._success, {"t": self._steps, "truncated": truncated})

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
        self._env, self._task_id, self._geoms = None, None, None

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- privileged state
    @property
    def steps(self) -> int:
        return self._steps

    def proprio(self) -> np.ndarray:
        """``(9,)`` float32: gripper_qpos (2), eef_pos (3), eef_quat (4, xyzw)."""
        snap = self._robot()
        return np.concatenate([snap[2], snap[0], snap[1]]).astype(np.float32)

    def object_state_layout(self) -> dict[str, slice]:
        """Names of the ``object_state`` slices. ``"full"``: ``"<body>"`` -> 7 floats, ``"joint:<name>"`` -> 1 float;
        ``"goal"``: ``"goal<i>.object"`` -> 7 (pose, or joint value then zeros), ``"goal<i>.target"`` -> 3."""
        out: dict[str, slice] = {}
        if self.object_state_kind == "goal":
            for g in range(GOAL_SLOTS):
                out[f"goal{g}.object"] = slice(g * GOAL_SLOT_DIM, g * GOAL_SLOT_DIM + 7)
                out[f"goal{g}.target"] = slice(g * GOAL_SLOT_DIM + 7, (g + 1) * GOAL_SLOT_DIM)
            return out
        i = 0
        for name in self._names[0] + self._names[1]:
            out[name] = slice(i, i + 7)
            i += 7
        for jname, _ in self._joint_qpos:
            out[f"joint:{jname}"] = slice(i, i + 1)
            i += 1
        return out

    def object_state(self) -> np.ndarray:
        """Flat float32 privileged state in this environment's layout (module docstring, :meth:`object_state_layout`)."""
        if self.object_state_kind == "goal":
            return self.goal_state()
        inner, data = self._env.env, self._env.sim.data
        parts = []
        for name in self._names[0] + self._names[1]:
            bid = inner.obj_body_id[name]
            parts.append(np.asarray(data.body_xpos[bid]))
            parts.append(_wxyz_to_xyzw(np.asarray(data.body_xquat[bid])))
        parts.append(np.array([data.qpos[a] for _, a in self._joint_qpos], dtype=np.float64))
        return np.concatenate(parts).astype(np.float32)

    def goal_state(self) -> np.ndarray:
        """``(GOAL_STATE_DIM,)`` float32: the goal predicates' objects and targets (the ``"goal"`` layout)."""
        data = self._env.sim.data
        out = np.zeros(GOAL_STATE_DIM, np.float32)
        for g, slot in enumerate(self._goal_slots[:GOAL_SLOTS]):
            o = g * GOAL_SLOT_DIM
            if slot.joint_qpos is not None:
                out[o] = data.qpos[slot.joint_qpos]
            elif slot.body is not None:
                out[o:o + 3] = data.body_xpos[slot.body]
                out[o + 3:o + 7] = _wxyz_to_xyzw(np.asarray(data.body_xquat[slot.body]))
            if slot.target_site is not None:
                out[o + 7:o + 10] = data.get_site_xpos(slot.target_site)
            elif slot.target_body is not None:
                out[o + 7:o + 10] = data.body_xpos[slot.target_body]
        return out

    def snapshot(self) -> SceneSnapshot:
        """Privileged :class:`SceneSnapshot` of the current state (for the scripted expert)."""
        if self._env is None or self._geoms is None:
            raise RuntimeError("no scene built yet: call reset() first")
        inner, sim = self._env.env, self._env.sim
        data = sim.data
        bodies: dict[str, BodyState] = {}
        for name in self._names[0] + self._names[1]:
            bid = inner.obj_body_id[name]
            lo, hi = self._geoms.aabb(data, self._geoms.geoms[name])
            parts = {p: self._geoms.aabb(data, ids) for p, ids in self._geoms.parts[name].items()}
            pos, mat = np.array(data.body_xpos[bid]), np.array(data.body_xmat[bid]).reshape(3, 3)
            llo, lhi = self._geoms.aabb(data, self._geoms.geoms[name], frame=(pos, mat))
            quat = _wxyz_to_xyzw(np.array(data.body_xquat[bid]))
            bodies[name] = BodyState(pos, quat, lo, hi, parts, mat, llo, lhi)
        sites: dict[str, SiteState] = {}
        for name, site in inner.object_sites_dict.items():
            size = np.asarray(site.size if site.size is not None else np.zeros(3), dtype=np.float64)
            sites[name] = SiteState(
                np.array(data.get_site_xpos(name)), np.array(data.get_site_xmat(name)), size, site.parent_name
            )
        eef_pos, eef_quat, grip = self._robot(site_quat=True)
        base_id = sim.model.body_name2id(inner.robots[0].robot_model.root_body)
        return SceneSnapshot(
            objects={n: bodies[n] for n in self._names[0]},
            fixtures={n: bodies[n] for n in self._names[1]},
            sites=sites,
            joints={j: float(data.qpos[a]) for j, a in self._joint_qpos},
            eef_pos=eef_pos,
            eef_quat=eef_quat,
            gripper_qpos=grip,
            goal=parse_goal(inner.parsed_problem["goal_state"]),
            base_pos=np.array(data.body_xpos[base_id]),
        )

    # ----------------------------------------------------------------- internals
    def _build(self, task_id: int) -> None:
        self.close()
        prepare_libero()
        from libero.libero.envs.env_wrapper import ControlEnv  # heavy; after the fixes

        info = task_info(self.suite, task_id)
        with contextlib.redirect_stdout(io.StringIO()), _global_numpy_seed((task_id,)):
            self._env = ControlEnv(
                bddl_file_name=info.bddl_path,
                use_camera_obs=False,  # cameras off; render() on demand
                has_offscreen_renderer=True,
                camera_heights=self.image_size,
                camera_widths=self.image_size,
                hard_reset=False,  # reuse the compiled model across episodes (reset in ~20 ms)
                horizon=self.settle_steps + self.max_steps + 50,
            )
        self._task_id = task_id
        inner = self._env.env
        self._names = (tuple(inner.objects_dict), tuple(inner.fixtures_dict))
        model = self._env.sim.model
        roots = {n: inner.obj_body_id[n] for n in self._names[0] + self._names[1]}
        self._geoms = GeomIndex(model, roots)
        self._joint_qpos = []
        for name in self._names[1]:
            for joint in getattr(inner.get_object(name), "joints", None) or []:
                jid = model.joint_name2id(joint)
                self._joint_qpos.append((joint, int(model.jnt_qposadr[jid])))
        self._goal_slots = _goal_slots(parse_goal(inner.parsed_problem["goal_state"]), inner, model,
                                       dict(self._joint_qpos))

    def _robot(self, site_quat: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eef_pos (3,), eef_quat (4,) xyzw, gripper_qpos (2,)) read from the sim.

        ``eef_quat`` is the hand *body* orientation like robosuite's ``robot0_eef_quat`` observation (and
        LIBERO's datasets); ``site_quat=True`` gives the control-site orientation the OSC controller uses.
        """
        robot = self._env.env.robots[0]
        data = self._env.sim.data
        pos = np.array(data.site_xpos[robot.eef_site_id["right"]])
        if site_quat:
            from robosuite.utils.transform_utils import mat2quat

            quat = np.asarray(mat2quat(np.array(data.site_xmat[robot.eef_site_id["right"]]).reshape(3, 3)))
        else:
            bid = self._env.sim.model.body_name2id(robot.robot_model.eef_name["right"])
            quat = _wxyz_to_xyzw(np.array(data.body_xquat[bid]))
        grip = np.array([data.qpos[i] for i in robot._ref_gripper_joint_pos_indexes["right"]])
        return pos, quat, grip

    def _observation(self, render: bool) -> Observation:
        images: Mapping[str, np.ndarray] = self.render() if render else {}
        return Observation(images=images, proprio=self.proprio(), object_state=self.object_state())


@dataclass(frozen=True)
class _GoalSlot:
    """Where one goal predicate's numbers are read from (MuJoCo ids)."""

    body: int | None = None  # the moved object's body (In / On)
    joint_qpos: int | None = None  # the fixture joint's qpos address (Open / Close / TurnOn / TurnOff)
    target_site: str | None = None  # the target region site (In / On onto a region)
    target_body: int | None = None  # the target body (On / In an object or fixture; the fixture of a joint goal)


def _goal_slots(goal: tuple[tuple[str, ...], ...], inner: Any, model: Any, joints: Mapping[str, int]) -> list[_GoalSlot]:
    """Resolve each goal predicate to MuJoCo ids once per scene; predicates it cannot resolve read as zeros."""
    slots = []
    for pred in goal:
        head, args = pred[0], pred[1:]
        if head in ("in", "on") and len(args) == 2 and args[0] in inner.obj_body_id:
            target = args[1]
            if target in inner.object_sites_dict:
                slots.append(_GoalSlot(body=inner.obj_body_id[args[0]], target_site=target))
            elif target in inner.obj_body_id:
                slots.append(_GoalSlot(body=inner.obj_body_id[args[0]], target_body=inner.obj_body_id[target]))
            else:
                slots.append(_GoalSlot(body=inner.obj_body_id[args[0]]))
        elif len(args) == 1 and args[0] in inner.obj_body_id:
            fixture_joints = [a for j, a in joints.items() if j.startswith(args[0])]
            slots.append(_GoalSlot(joint_qpos=fixture_joints[0] if fixture_joints else None,
                                   target_body=inner.obj_body_id[args[0]]))
        elif len(args) == 1 and args[0] in inner.object_sites_dict:  # e.g. Open(<cabinet>_middle_region)
            slots.append(_GoalSlot(target_site=args[0]))
        else:
            slots.append(_GoalSlot())
    return slots


def _wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.array([q[1], q[2], q[3], q[0]], dtype=np.float64)
