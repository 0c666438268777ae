"""Typed, validated configuration with profiles (``smoke``, ``cpu``, ``paper``).

Resolution order (later wins): profile defaults -> YAML file (``--config``) -> dotted overrides
(``--set train.steps=100``). Unknown keys and bad values raise :class:`ConfigError` naming them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A bad profile, key or value; the message names it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


class SimConfig(_Section):
    suites: list[str] = Field(default_factory=lambda: ["libero_object"])
    tasks: list[int] | None = None  # None = every task of the suite
    image_size: int = Field(64, ge=16, le=512)
    # Render as robosuite does (4x multisampling, the LIBERO datasets' look). False: one sample per pixel, about half
    # the cost of a frame in Mesa's software rasteriser (no GPU). Demos and evaluation of a workspace must agree.
    antialias: bool = True
    # Coarser visual meshes (vertex clustering on this many cells along each visual mesh's diagonal, sims.mesh_detail):
    # a 64 px LIBERO frame renders ~4x cheaper on a CPU at 32, within ~2.3 grey levels; physics unchanged. None: the
    # meshes as shipped. Demos and evaluation of a workspace must agree.
    mesh_resolution: int | None = Field(None, ge=4)
    # The privileged object state LIBERO records with every step: "goal" (the goal predicates' objects and targets,
    # 20 floats for every task: what `model.object_state` feeds the model) or "full" (every body and joint; its
    # length depends on the task). RoboCasa records none.
    object_state: Literal["full", "goal"] = "goal"
    # The last k init states of every task are held out: demos and training rollouts never start there, evaluation
    # always does (LIBERO ships 50 per task: 0-39 train, 40-49 held out by default).
    heldout_init_states: int = Field(10, ge=1)

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not (s.startswith("libero_") or s.startswith("robocasa_"))]
        if bad or not v:
            raise ValueError(f"unknown suite(s) {bad or v}; expected libero_* or robocasa_* names")
        return v


class DemoConfig(_Section):
    per_task: int = Field(5, ge=1)
    image_every: int = Field(4, ge=1)  # render cameras every k-th step of a demo
    # Perturbed-expert demos (DART): Gaussian noise of this std (action units) on the executed arm actions while the
    # closed-loop expert keeps correcting; its own actions are stored as the policy's labels (`expert_action`), so
    # the demos cover recovery from states a clean expert never visits. 0 = clean demos.
    action_noise: float = Field(0.0, ge=0, le=1)


class ModelConfig(_Section):
    preset: Literal["tiny", "2b"] = "tiny"
    weights_path: Path | None = None  # local diffusers-format folder with Cosmos-Predict2 weights
    vae_path: Path | None = None  # local AutoencoderKLWan folder; None = fast deterministic stand-in
    t5_path: Path | None = None  # local T5 encoder; None = fixed per-task embeddings
    # With the Wan VAE: "clip" = the reference's slot encoding (one causal clip per sample, 4 pixel frames per slot,
    # blank = an encoded black frame); "frame" = each image encoded alone, blank slot zero.
    wan_encoding: Literal["clip", "frame"] = "clip"
    # A weights_path folder without vae/ or text_encoder/ is refused unless stand-ins are allowed explicitly.
    allow_stand_ins: bool = False
    chunk_size: int = Field(16, ge=1)
    # Actions of each sampled chunk executed before the policy is queried again (None: the whole chunk).
    execute_actions: int | None = Field(None, ge=1)
    gamma: float = Field(0.99, gt=0, le=1)
    # The optional privileged object-state frame (SPEC: off in the paper): the model also conditions on the goal
    # objects' poses and targets (`sim.object_state=goal`, LIBERO only). A CPU aid; `paper` keeps it off.
    object_state: bool = False

    @model_validator(mode="after")
    def _execute_within_chunk(self) -> ModelConfig:
        if self.execute_actions is not None and self.execute_actions > self.chunk_size:
            raise ValueError(f"execute_actions ({self.execute_actions}) cannot exceed chunk_size ({self.chunk_size})")
        return self


class TrainConfig(_Section):
    """Training run settings. Hyperparameters left ``None`` take the model preset's recipe
    (``cosmos_policy.configuration_cosmos_policy.TrainConfig``, the one definition); the values a run used are
    recorded in its checkpoint and MLflow run."""

    steps: int | None = Field(None, ge=1)
    # A time budget (wall minutes from the start of Ray Train, start-up included): the loop measures its rate and sets the
    # step count (the lr schedule's horizon) to fill it, capped at ``steps``; the count used is recorded.
    minutes: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)  # global batch, split evenly across workers
    lr: float | None = Field(None, gt=0)
    lr_schedule: Literal["constant", "cosine"] | None = None
    warmup_steps: int | None = Field(None, ge=0)
    min_lr_ratio: float | None = Field(None, ge=0, le=1)
    weight_decay: float | None = Field(None, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    fractions: tuple[float, float, float] | None = None  # base mix (policy, world_model, value)
    bf16_autocast: bool | None = None  # on GPU only; master weights stay fp32
    augment_shift: float | None = Field(None, ge=0)  # random latent shift in training (latent pixels; 0 = off)
    # "all" (the reference's, the presets'): one mean over every latent element, a sample weighs by the share of frames
    # it generates; "generated": each sample's error averaged over its generated elements. None = the preset's.
    loss_normalization: Literal["generated", "all"] | None = None
    # Value samples see (s, a, s′) or s′ alone (V(s′)); None = what the starting model uses (a new one: (s, a, s′)).
    value_inputs: Literal["state_action_future", "future"] | None = None
    # Ray Train
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)  # extra (custom) Ray resources per worker
    report_every: int = Field(20, ge=1)  # ray.train.report + MLflow metrics every k steps
    checkpoint_every: int = Field(100, ge=1)  # a resumable checkpoint every m steps
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=0)  # Ray Train restarts of a failed worker group (FailureConfig)
    storage_path: str | None = None  # Ray Train run storage; None = $FLYWHEEL_HOME/ray_train (shared FS on clusters)
    seed: int = 0

    @field_validator("fractions")
    @classmethod
    def _fractions_sum(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and (any(f < 0 for f in v) or abs(sum(v) - 1) > 1e-6):
            raise ValueError(f"fractions (policy, world_model, value) must be >= 0 and sum to 1, got {list(v)}")
        return v


class RefineConfig(_Section):
    """The 90/10 refinement run: same settings as ``train`` except these (``None`` = the preset's / train's)."""

    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0)  # as train.minutes, for the refinement
    rollout_fraction: float | None = Field(None, ge=0, le=1)  # the 90/10 split
    balance_outcomes: bool | None = None  # rollout samples half successes, half failures
    lr: float | None = Field(None, gt=0)
    # The refined model is the planning model: V(s′) by default, as the reference's planning models.
    value_inputs: Literal["state_action_future", "future"] | None = "future"


class RolloutConfig(_Section):
    episodes_per_task: int = Field(2, ge=1)
    num_workers: int = Field(2, ge=1)
    expert_noise_share: float = Field(0.5, ge=0, le=1)  # behaviour mix: share of noisy-expert episodes
    expert_noise_std: float = Field(0.3, ge=0)
    max_episode_retries: int = Field(2, ge=0)
    # Where a learned policy runs while batched across env workers (benchmarks/bench_rollouts.py compares).
    policy_placement: Literal["driver", "actor"] = "driver"


class EvalConfig(_Section):
    episodes_per_task: int = Field(2, ge=1)
    planning: bool = True
    num_candidates: int = Field(8, ge=1)
    world_model_samples: int = Field(3, ge=1)
    value_samples: int = Field(5, ge=1)
    # Solver steps per sampling chain in rollouts, +1 clean call at sigma_min: 4 = the reference's 5 network calls
    # (held-out: 8/40 as with 6 calls, and ~17% less inference time; docs/learning.md).
    sampler_steps: int = Field(4, ge=1)
    # Solver steps of the planner's world-model and value stages: 0 = one network call at sigma_max, the clean
    # estimate (the reference's LIBERO setting, one denoising step each); the candidates keep sampler_steps.
    world_model_steps: int = Field(0, ge=0)
    value_steps: int = Field(0, ge=0)


class CycleConfig(_Section):
    """The nightly cycle: which rollouts refinement sees, how the held-out value/world-model set is collected,
    when a candidate is promoted, and the schedule."""

    rollout_window: int = Field(2, ge=1)  # refinement uses the rollouts of the last w iterations (this one included)
    # Held-out episodes for value AUC / world-model error: the noisy expert on held-out init states (both outcomes),
    # stored as source=eval beside the model's own evaluation episodes.
    heldout_expert_episodes_per_task: int = Field(2, ge=0)
    # Clean scripted-expert episodes on held-out init states (held-out demos): the sampled-chunk action L1.
    heldout_demos_per_task: int = Field(1, ge=0)
    value_steps_per_episode: int = Field(4, ge=1)  # steps of each held-out episode scored by the value head
    promote_alpha: float = Field(0.1, gt=0, lt=1)  # one-sided Fisher exact test, candidate > champion
    promote_on: Literal["planning", "direct"] = "planning"  # which evaluation mode decides promotion
    # What the 90/10-refined model becomes. "separate" (the reference): a planning model, whose world model and value
    # judge the candidates of the policy it was refined from; the deployed system is the pair (aliases `champion`
    # and `champion-planner`). "same": it replaces the policy (acts and plans alone).
    planner: Literal["separate", "same"] = "separate"
    # With a separate planner the candidate's direct mode is the base policy (the same system as the base's, evaluated
    # once). True also evaluates the refined model's own direct sampling (not deployed; 40 more episodes on cpu).
    refined_policy_diagnostic: bool = False
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _separate_planner_is_judged_by_planning(self) -> CycleConfig:
        if self.planner == "separate" and self.promote_on == "direct":
            raise ValueError("cycle.planner='separate' deploys the refined model as a planning model, which direct "
                             "sampling never uses: promote on planning (cycle.promote_on='planning') or set "
                             "cycle.planner='same'")
        return self


class MlflowConfig(_Section):
    tracking_uri: str | None = None  # None = sqlite:///$FLYWHEEL_HOME/mlflow/mlflow.db
    experiment: str = "cosmos-policy-flywheel"
    model_name: str = "cosmos-policy"


class RayConfig(_Section):
    address: str | None = None  # None = $RAY_ADDRESS or a local instance
    num_cpus: int | None = None
    log_to_driver: bool = False  # worker stdout/stderr (simulator chatter) in the console; errors are recorded anyway


class FlywheelConfig(_Section):
    profile: str = "cpu"
    seed: int = 0
    sim: SimConfig = Field(default_factory=SimConfig)
    demos: DemoConfig = Field(default_factory=DemoConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    cycle: CycleConfig = Field(default_factory=CycleConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _separate_planner_needs_planning(self) -> FlywheelConfig:
        if self.cycle.planner == "separate" and not self.eval.planning:
            raise ValueError("cycle.planner='separate' deploys the refined model as a planning model, judged only "
                             "by planning: set eval.planning=true or cycle.planner='same'")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


PROFILES: dict[str, dict[str, Any]] = {
    # Tests: minutes on 2 cores.
    "smoke": {
        "sim": {"suites": ["libero_object"], "tasks": [0], "image_size": 32, "antialias": False,
                "mesh_resolution": 32},
        "demos": {"per_task": 2, "image_every": 8},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 0, "report_every": 2, "checkpoint_every": 3},
        "refine": {"steps": 4},
        "rollout": {"episodes_per_task": 2, "num_workers": 1},
        "eval": {"episodes_per_task": 1, "num_candidates": 2, "world_model_samples": 1, "value_samples": 2},
        "cycle": {"heldout_expert_episodes_per_task": 2, "value_steps_per_episode": 2},
    },
    # A cycle that learns on a 2-core CPU (~25 minutes): the settings of `bench_learning.py --quick`.
    "cpu": {
        "sim": {"suites": ["libero_object"], "tasks": [0, 1], "image_size": 64, "antialias": False,
                "mesh_resolution": 32},
        # Perturbed-expert demos: held-out 11/20 vs 0/20 for clean demos, same recipe and seeds (docs/learning.md).
        "demos": {"per_task": 20, "image_every": 4, "action_noise": 0.15},
        # Re-query after 8 of the 16 actions: held-out 12/40 vs 8/40 for the whole chunk, same model and seeds.
        "model": {"execute_actions": 8},
        # 80% policy samples: held-out 8/40 vs 3/40 for the paper's 50/25/25 at the same 12,414 steps (docs/learning.md).
        # A 10-minute budget (steps: a cap no 2-core CPU reaches in it); refinement a quarter of it.
        "train": {"minutes": 10, "steps": 100_000, "batch_size": 16, "warmup_steps": 100, "checkpoint_every": 1000,
                  "report_every": 50, "cpus_per_worker": 2, "fractions": [0.8, 0.1, 0.1]},
        "refine": {"minutes": 2.5, "steps": 100_000},
        "rollout": {"episodes_per_task": 8, "num_workers": 2},
        # Best-of-N on a CPU: 4 candidates, 1 world-model and 2 value samples each (the paper's 8/3/5 costs ~10x).
        "eval": {"episodes_per_task": 20, "num_candidates": 4, "world_model_samples": 1, "value_samples": 2},
        "cycle": {"heldout_expert_episodes_per_task": 4, "heldout_demos_per_task": 2},
    },
    # The paper's settings (GPU cluster): 2B model, 224px, 50 trials per task.
    "paper": {
        "sim": {"suites": list(LIBERO_SUITES), "image_size": 224},
        "demos": {"per_task": 50, "image_every": 1},
        "model": {"preset": "2b"},
        "train": {"steps": 40000, "batch_size": 1920, "num_workers": 64, "use_gpu": True,
                  "checkpoint_every": 1000, "report_every": 50, "max_failures": 3},
        "refine": {"steps": 10000},
        "rollout": {"episodes_per_task": 50, "num_workers": 64},
        "eval": {"episodes_per_task": 50},
    },
}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
    return key.strip().split("."), value


def load_config(profile: str = "cpu", path: str | Path | None = None, overrides: list[str] | None = None) -> FlywheelConfig:
    """Resolve a config from a profile, an optional YAML file and dotted ``key=value`` overrides."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    data: dict[str, Any] = _deep_merge({"profile": profile}, copy.deepcopy(PROFILES[profile]))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        loaded.pop("profile", None)
        data = _deep_merge(data, loaded)
    for item in overrides or []:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = value
    try:
        return FlywheelConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        msg = "unknown config key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{msg}: {loc} (got {json.dumps(first.get('input'), default=str)})") from exc
