"""``CosmosPolicy``: checkpoint → ``act(observations, instructions)`` → action chunks ``(B, K, A)``.

Satisfies the simulators' policy protocol (``act(observations, instructions)``); observations are any objects
with the attributes of :class:`~cosmos_policy.observation.PolicyObservation`. Direct mode samples the action in
one parallel pass (or autoregressively); planning mode runs batched best-of-N (:func:`~cosmos_policy.planner.plan`),
judged by the model itself or by a separate *planning model* (e.g. the 90/10-refined one) that reads the same
latents and action units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cosmos_policy.checkpoint_io import load_checkpoint
from cosmos_policy.configuration_cosmos_policy import PlannerConfig
from cosmos_policy.latent_layout import LatentLayout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import NormalizationStats
from cosmos_policy.observation import PolicyObservation as Observation
from cosmos_policy.planner import PlanOutput, plan, row_seed, sample_chain
from cosmos_policy.tokenizer import Tokenizer, blank_latent, build_tokenizer, encode_slots


class CosmosPolicy:
    """Rollout-engine policy around a :class:`CosmosPolicyModel`.

    Args:
        model: trained model (eval mode is set).
        stats: normalisation statistics saved with it.
        tokenizer: image tokenizer; built from ``model.config.tokenizer`` when None.
        planning: run best-of-N planning instead of direct sampling.
        planner: planning settings (default: ``model.config.planner``).
        direct_mode: ``"parallel"`` or ``"autoregressive"`` for direct sampling.
        seed: base seed. With ``keys`` (one integer per observation, e.g. from the episode and its query index),
            an observation's noise depends on (seed, key) only, whatever else is in the batch; without, each ``act``
            call advances an internal counter and row ``i`` of a call is seeded from (seed, call, i).
        camera_aliases: optional map from observation camera names to layout camera names.
        planning_model: with ``planning``, the model whose world model and value function judge the candidates
            (None: ``model``); it must share the layout, tokenizer, text encoder and normalisation statistics.
    """

    def __init__(self, model: CosmosPolicyModel, stats: NormalizationStats, tokenizer: Tokenizer | None = None,
                 planning: bool = False, planner: PlannerConfig | None = None,
                 direct_mode: Literal["parallel", "autoregressive"] = "parallel", seed: int = 0,
                 camera_aliases: dict[str, str] | None = None,
                 planning_model: tuple[CosmosPolicyModel, NormalizationStats] | None = None) -> None:
        self.model = model.eval()
        self.stats = stats
        self.tokenizer = tokenizer or build_tokenizer(model.config.tokenizer, device=model.device)
        self.planning = planning
        self.planner = planner or model.config.planner
        self.direct_mode = direct_mode
        self.seed = seed
        self.camera_aliases = camera_aliases or {}
        self.calls = 0
        self.last_plan: PlanOutput | None = None
        self.planning_model: CosmosPolicyModel | None = None
        if planning_model is not None:
            judge, judge_stats = planning_model
            _check_compatible(model, stats, judge, judge_stats)
            self.planning_model = judge.eval()

    @classmethod
    def from_checkpoint(cls, directory: str | Path, expected_layout: LatentLayout | None = None,
                        device: torch.device | str = "cpu", planning: bool = False,
                        planner: PlannerConfig | None = None, vae_path: str | Path | None = None,
                        t5_path: str | Path | None = None, planning_checkpoint: str | Path | None = None,
                        **kwargs: object) -> CosmosPolicy:
        """Load a checkpoint folder (refuses a mismatched ``expected_layout``; ``vae_path`` / ``t5_path``: where
        this machine keeps the pretrained components, see :func:`cosmos_policy.checkpoint_io.load_checkpoint`);
        ``planning_checkpoint``: a second folder whose model judges the candidates when planning."""
        model, stats = load_checkpoint(directory, expected_layout=expected_layout, device=device,
                                       vae_path=vae_path, t5_path=t5_path)
        judge = None
        if planning_checkpoint is not None:
            judge = load_checkpoint(planning_checkpoint, expected_layout=model.layout, device=device,
                                    vae_path=vae_path, t5_path=t5_path)
        return cls(model, stats, planning=planning, planner=planner, planning_model=judge,  # type: ignore[arg-type]
                   **kwargs)

    @property
    def layout(self) -> LatentLayout:
        return self.model.layout

    def with_planning(self, planning: bool = True, **planner_overrides: object) -> CosmosPolicy:
        """A copy sharing the model (and planning model), with planning switched and planner fields overridden."""
        planner = replace(self.planner, **planner_overrides) if planner_overrides else self.planner
        out = CosmosPolicy(self.model, self.stats, self.tokenizer, planning, planner, self.direct_mode, self.seed,
                           self.camera_aliases)
        out.planning_model = self.planning_model
        return out

    def _images(self, observations: Sequence[Observation]) -> dict[str, np.ndarray]:
        """Layout camera → ``(B, H, W, 3)`` images of the observations (aliases applied)."""
        out = {}
        for cam in self.layout.camera_names:
            imgs = []
            for obs in observations:
                images = {self.camera_aliases.get(k, k): v for k, v in obs.images.items()}
                if cam not in images:
                    raise KeyError(f"observation lacks camera {cam!r} (has {sorted(images)}); the policy needs "
                                   f"images at every query step")
                imgs.append(np.asarray(images[cam]))
            out[cam] = np.stack(imgs)
        return out

    def _proprio(self, observations: Sequence[Observation]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.stats.proprio.normalize(o.proprio) for o in observations]))

    def _latents(self, observations: Sequence[Observation], futures: Sequence[Observation] | None = None
                 ) -> torch.Tensor:
        """Current frames of ``observations`` and, when given, the future frames (cameras, proprio) of ``futures``,
        encoded in one pass as training encodes them; the other frames zero."""
        lay = self.layout
        now = self._images(observations)
        cams, later = encode_slots(self.tokenizer, lay, now, None if futures is None else self._images(futures))
        obj = None
        if lay.object_state_dim:
            if self.stats.object_state is None or any(o.object_state is None for o in observations):
                raise ValueError("layout has an object_state slot: observations and stats need object_state")
            obj = torch.from_numpy(np.stack([self.stats.object_state.normalize(o.object_state)  # type: ignore
                                             for o in observations]))
        return self.model.assemble(cams, self._proprio(observations), obj, future_cameras=later,
                                   future_proprio=None if futures is None else self._proprio(futures),
                                   blank=blank_latent(self.tokenizer)).to(self.model.device)

    @torch.no_grad()
    def current_latents(self, observations: Sequence[Observation]) -> torch.Tensor:
        """Observations → ``(B, C, T', H, W)`` latents with the current frames filled."""
        return self._latents(observations)

    @torch.no_grad()
    def observed_latents(self, observations: Sequence[Observation], futures: Sequence[Observation]) -> torch.Tensor:
        """Latents with the current frames of ``observations`` and the future frames (cameras, proprio) of the
        states actually reached, ``futures``, encoded as training encodes them; action and value frames zero."""
        if len(futures) != len(observations):
            raise ValueError(f"{len(futures)} future observations for {len(observations)} observations")
        return self._latents(observations, futures)

    accepts_episode_keys = True  # act(..., keys=...) seeds each row by its own key (rollouts pass them)

    @torch.no_grad()
    def act(self, observations: Sequence[Observation], instructions: Sequence[str],
            keys: Sequence[int] | None = None) -> np.ndarray:
        """Action chunks for a batch of environments.

        Args:
            observations: B observations (images upright, uint8).
            instructions: B task instructions.
            keys: optional B integers naming each row's query (see ``seed`` in the class docstring).

        Returns:
            ``(B, K, A)`` float32 actions in environment units.
        """
        if len(observations) != len(instructions):
            raise ValueError(f"{len(observations)} observations but {len(instructions)} instructions")
        if keys is not None and len(keys) != len(observations):
            raise ValueError(f"{len(keys)} keys for {len(observations)} observations")
        if keys is not None:
            seeds = [row_seed(self.seed, int(k)) for k in keys]
        else:
            call_seed = row_seed(self.seed, self.calls)
            seeds = [row_seed(call_seed, i) for i in range(len(observations))]
        self.calls += 1
        current = self.current_latents(observations)
        text = self.model.encode_text(instructions)
        if self.planning:
            self.last_plan = plan(self.model, current, text, self.planner, seed=seeds, planning_model=self.planning_model)
            actions = self.last_plan.actions
        else:
            x = sample_chain(self.model, current, text, seeds, self.direct_mode, self.planner.max_batch_size)
            actions = self.model.extract_action(x)
        return self.stats.action.unnormalize(actions.float().cpu().numpy())


def _check_compatible(model: CosmosPolicyModel, stats: NormalizationStats, judge: CosmosPolicyModel,
                      judge_stats: NormalizationStats) -> None:
    """A planning model reads the policy's latents, text embeddings and normalised actions: all must agree."""
    for what, a, b in (("latent layout", model.layout, judge.layout),
                       ("image tokenizer", model.config.tokenizer, judge.config.tokenizer),
                       ("text encoder", model.config.text, judge.config.text),
                       ("normalisation statistics", stats.to_dict(), judge_stats.to_dict())):
        if a != b:
            raise ValueError(f"the planning model's {what} differs from the policy's; a planning model must be "
                             f"trained for the same suite and components as the policy (e.g. refined from it)")
