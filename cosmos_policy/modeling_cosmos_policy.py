"""Cosmos Policy model: diffusers' ``CosmosTransformer3DModel`` + preconditioning + text conditioning + sampling.

The transformer is imported from diffusers and wrapped, never subclassed or copied. One network is policy,
world model and value function; which one it acts as is decided by the per-frame conditioning mask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from cosmos_policy.configuration_cosmos_policy import BackboneConfig, CosmosPolicyConfig, config_folder
from cosmos_policy.denoiser import CosmosDenoiser
from cosmos_policy.latent_layout import LatentLayout, SampleType, decode_value, extract, inject
from cosmos_policy.noise_schedule import sampling_sigmas
from cosmos_policy.sampler import get_sampler
from cosmos_policy.text_conditioning import build_text_embedder


def prepare_diffusers_import() -> None:
    """Diffusers' model modules import torchvision when it is installed; PyPI's CUDA-built torchvision needs
    :func:`flywheel.compat.ensure_torchvision` beside the CPU torch wheel. Nothing of torchvision is used."""
    try:
        from flywheel.compat import ensure_torchvision
    except ImportError:  # used outside this project: nothing to fix
        return
    ensure_torchvision()


def import_cosmos_transformer() -> type:
    """``diffusers.CosmosTransformer3DModel`` (after :func:`prepare_diffusers_import`)."""
    prepare_diffusers_import()
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel


def build_transformer(backbone: BackboneConfig, device: torch.device | str | None = None) -> nn.Module:
    """Randomly initialised transformer of the given shape (``device="meta"`` allocates nothing)."""
    cls = import_cosmos_transformer()
    with torch.device(device or "cpu"):
        model = cls(**backbone.transformer_kwargs())
    if backbone.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def backbone_config_from_diffusers(path: str | Path, base: BackboneConfig) -> BackboneConfig:
    """Read a diffusers ``CosmosTransformer3DModel`` ``config.json`` into a :class:`BackboneConfig`.

    Upstream Video2World checkpoints use ``in_channels = C + 1`` (condition mask) and
    ``concat_padding_mask=True``; our wrapper builds the same weights as ``in_channels = C + 2`` without
    torchvision.
    """
    cfg = json.loads((_transformer_folder(path) / "config.json").read_text())
    unsupported = [k for k in ("use_crossattn_projection", "controlnet_block_every_n", "img_context_dim_in")
                   if cfg.get(k)]
    if unsupported:
        raise ValueError(f"transformer config sets {unsupported}: only Cosmos-Predict2 Video2World-style "
                         f"transformers (T5 cross-attention, no control/image-context branches) are supported")
    pad = bool(cfg.get("concat_padding_mask", True))
    latent = int(cfg["out_channels"])
    if int(cfg["in_channels"]) != latent + 1:
        raise ValueError(f"expected a Video2World transformer with in_channels = out_channels + 1 (mask channel), "
                         f"got in_channels={cfg['in_channels']}, out_channels={latent}")
    return BackboneConfig(
        latent_channels=latent, num_layers=cfg["num_layers"], num_attention_heads=cfg["num_attention_heads"],
        attention_head_dim=cfg["attention_head_dim"], mlp_ratio=cfg.get("mlp_ratio", 4.0),
        text_embed_dim=cfg.get("text_embed_dim", 1024), adaln_lora_dim=cfg.get("adaln_lora_dim", 256),
        max_size=tuple(cfg.get("max_size", base.max_size)), patch_size=tuple(cfg.get("patch_size", base.patch_size)),
        rope_scale=tuple(cfg.get("rope_scale", base.rope_scale)), padding_mask_channel=pad,
        extra_pos_embed_type=cfg.get("extra_pos_embed_type"), fps=base.fps,
        gradient_checkpointing=base.gradient_checkpointing)


def _transformer_folder(path: str | Path) -> Path:
    return config_folder(path, "transformer", "diffusers transformer")


def load_diffusers_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All ``*.safetensors`` shards of a diffusers transformer folder, merged."""
    from safetensors.torch import load_file

    shards = sorted(_transformer_folder(path).glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no .safetensors weights in {_transformer_folder(path)}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    return state


def pretrained_config(config: CosmosPolicyConfig, path: str | Path | None, vae_path: str | Path | None = None,
                      t5_path: str | Path | None = None) -> CosmosPolicyConfig:
    """``config`` with backbone, tokenizer and text settings taken from local pretrained folders.

    ``path`` (transformer or pipeline folder, see :meth:`CosmosPolicyModel.from_pretrained`) sets the backbone
    shape, and its ``vae/`` / ``text_encoder/`` subfolders the tokenizer / text encoder unless ``vae_path`` /
    ``t5_path`` are given; ``path=None`` keeps the backbone. Raises ``FileNotFoundError`` for a missing config
    and ``ValueError`` when the VAE's latent channels or the backbone do not fit the layout.
    """
    from dataclasses import replace

    root = Path(path) if path is not None else None
    backbone = backbone_config_from_diffusers(root, config.backbone) if root is not None else config.backbone
    tokenizer, text = config.tokenizer, config.text
    vae = Path(vae_path) if vae_path else (root / "vae" if root and (root / "vae" / "config.json").exists() else None)
    if vae is not None:
        vae_cfg = json.loads((config_folder(vae, "vae", "AutoencoderKLWan") / "config.json").read_text())
        tokenizer = replace(tokenizer, kind="wan", path=str(vae), latent_channels=int(vae_cfg.get("z_dim", 16)))
    t5 = Path(t5_path) if t5_path else (root if root and (root / "text_encoder" / "config.json").exists() else None)
    if t5 is not None:
        text = replace(text, t5_path=str(t5))
    return replace(config, backbone=backbone, tokenizer=tokenizer, text=text)


class CosmosPolicyModel(nn.Module):
    """Policy + world model + value function in one latent video diffusion transformer.

    Args:
        config: full model config (layout, backbone, noise, sampler, ...).
        transformer: optional pre-built transformer (e.g. loaded weights); built from ``config`` otherwise.
        device: where to build it (``"meta"`` for shape checks).
        text_embedder: optional pre-built text embedder (e.g. a
            :class:`~cosmos_policy.text_conditioning.PrecomputedTextEmbedder` on a training worker without T5);
            built from ``config.text`` otherwise.
    """

    def __init__(self, config: CosmosPolicyConfig, transformer: nn.Module | None = None,
                 device: torch.device | str | None = None, text_embedder: object | None = None) -> None:
        super().__init__()
        self.config = config
        transformer = transformer if transformer is not None else build_transformer(config.backbone, device)
        self.denoiser = CosmosDenoiser(transformer, config.noise, config.backbone.padding_mask_channel,
                                       config.backbone.fps)
        self.text_embedder = text_embedder or build_text_embedder(config.text, config.backbone.text_embed_dim)

    @classmethod
    def from_pretrained(cls, config: CosmosPolicyConfig, path: str | Path, vae_path: str | Path | None = None,
                        t5_path: str | Path | None = None, device: torch.device | str = "cpu") -> CosmosPolicyModel:
        """Model whose transformer weights come from a local diffusers-format folder (e.g. Cosmos-Predict2 2B).

        ``path`` is a transformer folder or a pipeline folder (``transformer/``, and optionally ``vae/``,
        ``text_encoder/`` + ``tokenizer/``). The backbone shape is read from the transformer's ``config.json``;
        the Wan VAE tokenizer and T5 text encoder are taken from ``vae_path`` / ``t5_path`` or else from the
        pipeline's subfolders when present, and recorded in the returned model's config (so checkpoints saved
        from it rebuild them). ``config`` supplies the layout, noise, sampler, planner and training settings.
        """
        config = pretrained_config(config, path, vae_path, t5_path)
        with torch.device("meta"):
            transformer = build_transformer(config.backbone, "meta")
        transformer.load_state_dict(load_diffusers_state_dict(path), strict=True, assign=True)
        return cls(config, transformer=transformer.to(device))

    # ------------------------------------------------------------------ helpers
    @property
    def layout(self) -> LatentLayout:
        return self.config.layout

    @property
    def transformer(self) -> nn.Module:
        return self.denoiser.transformer

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode_text(self, instructions: Sequence[str]) -> torch.Tensor:
        """``B`` instructions → ``(B, L, D)`` text embeddings on the model's device (a T5 encoder follows the
        model to its device on first use)."""
        return self.text_embedder.to(self.device)(instructions).to(self.device)

    def condition_masks(self, sample_type: SampleType, batch_size: int) -> torch.Tensor:
        """``(B, T')`` bool mask for one sample type."""
        return self.layout.condition_mask(sample_type).to(self.device).expand(batch_size, -1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, cond_latents: torch.Tensor, cond_mask: torch.Tensor, text_emb: torch.Tensor,
                 noise: torch.Tensor, max_batch_size: int | None = None, num_steps: int | None = None
                 ) -> torch.Tensor:
        """Sample the generated frames given the conditioning frames (SPEC §3.6 sampler).

        Args:
            cond_latents: ``(B, C, T', H, W)``; conditioning frames hold clean latents, others anything.
            cond_mask: ``(B, T')`` bool.
            text_emb: ``(B, L, D)``.
            noise: ``(B, C, T', H, W)`` standard normal.
            max_batch_size: rows per forward; ``None`` = all at once.
            num_steps: solver steps (``None``: ``config.sampler.num_steps``); network calls are ``num_steps + 1``,
                so ``0`` is a single call at σ_max.

        Returns:
            ``(B, C, T', H, W)`` float32 with conditioning frames equal to ``cond_latents``.
        """
        cfg = self.config.sampler
        sigmas = sampling_sigmas(cfg.num_steps if num_steps is None else num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device=cond_latents.device)
        sampler = get_sampler(cfg.solver)
        step = max_batch_size or cond_latents.shape[0]
        outs = []
        for s in range(0, cond_latents.shape[0], step):
            cl, cm, te = cond_latents[s:s + step], cond_mask[s:s + step], text_emb[s:s + step]
            seen = self.value_view(cl, cm)

            def denoise(x: torch.Tensor, sigma: torch.Tensor, seen=seen, cm=cm, te=te) -> torch.Tensor:
                return self.denoiser(x, sigma, cm, seen, te)

            out = sampler(denoise, noise[s:s + step].to(cl.device) * sigmas[0], sigmas)
            outs.append(torch.where(cm[:, None, :, None, None], cl.float(), out) if seen is not cl else out)
        return torch.cat(outs)

    def value_view(self, latents: torch.Tensor, cond_mask: torch.Tensor) -> torch.Tensor:
        """What the network is shown: with ``config.value_inputs == "future"`` (V(s′)), value rows (those given the
        action and the future state) have their current-state and action frames zeroed, so the value depends on the
        future state alone; otherwise ``latents`` unchanged (the same object)."""
        if self.config.value_inputs != "future":
            return latents
        lay = self.layout
        rows = cond_mask[:, lay.action_index] & cond_mask[:, list(lay.future_indices)].all(1)
        if not bool(rows.any()):
            return latents
        hidden = torch.zeros(lay.num_frames, dtype=torch.bool, device=latents.device)
        hidden[[i for i in lay.current_indices if lay.slots[i].kind != "blank"] + [lay.action_index]] = True
        drop = rows.to(latents.device)[:, None] & hidden[None, :]  # (B, T')
        return latents.masked_fill(drop[:, None, :, None, None], 0.0)

    # ------------------------------------------------------------------ injection helpers
    def assemble(self, cameras: Mapping[str, torch.Tensor], proprio: torch.Tensor,
                 object_state: torch.Tensor | None = None, action: torch.Tensor | None = None,
                 future_cameras: Mapping[str, torch.Tensor] | None = None,
                 future_proprio: torch.Tensor | None = None, value: torch.Tensor | None = None,
                 blank: torch.Tensor | None = None) -> torch.Tensor:
        """Build the latent sequence; see :func:`assemble_latents`."""
        return assemble_latents(self.layout, cameras, proprio, object_state, action, future_cameras,
                                future_proprio, value, blank)

    def extract_action(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T', H, W)`` → normalised action chunks ``(B, K, A)`` (copies averaged)."""
        lay = self.layout
        flat = extract(latents[:, :, lay.action_index], lay.action_numel)
        return flat.reshape(-1, lay.chunk_size, lay.action_dim)

    def extract_value(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T', H, W)`` → value in [0, 1], ``(B,)``."""
        return decode_value(latents[:, :, self.layout.value_index])


def assemble_latents(layout: LatentLayout, cameras: Mapping[str, torch.Tensor], proprio: torch.Tensor,
                     object_state: torch.Tensor | None = None, action: torch.Tensor | None = None,
                     future_cameras: Mapping[str, torch.Tensor] | None = None,
                     future_proprio: torch.Tensor | None = None, value: torch.Tensor | None = None,
                     blank: torch.Tensor | None = None) -> torch.Tensor:
    """Compose one latent sequence per sample from image latents and injected vectors.

    Args:
        layout: frame layout.
        cameras: camera name → ``(B, C, H, W)`` current image latents.
        proprio: ``(B, P)`` normalised proprio.
        object_state: ``(B, S)`` normalised object state (needed iff the layout has the slot).
        action: ``(B, K*A)`` or ``(B, K, A)`` normalised actions; zeros when None.
        future_cameras, future_proprio: the state K steps later; zeros when None.
        value: ``(B,)`` value target in [-1, 1]; zeros when None.
        blank: ``(C, H, W)`` or ``(B, C, H, W)`` latent of the blank frame (a clip tokenizer's black frame); zeros
            when None.

    Returns:
        ``(B, C, T', H, W)`` float32.
    """
    b = proprio.shape[0]
    shape = (layout.latent_channels, layout.latent_height, layout.latent_width)
    frames = torch.zeros(b, layout.latent_channels, layout.num_frames, *shape[1:], device=proprio.device)
    for i, slot in enumerate(layout.slots):
        if slot.kind == "blank" and blank is not None:
            frames[:, :, i] = blank.to(frames)
        elif slot.kind == "camera":
            source = future_cameras if slot.future else cameras
            if source is not None:
                frames[:, :, i] = source[slot.camera].to(frames)
        elif slot.kind == "proprio":
            vec = future_proprio if slot.future else proprio
            if vec is not None:
                frames[:, :, i] = inject(vec.float().to(frames.device), shape)
        elif slot.kind == "object_state":
            if object_state is None:
                raise ValueError(f"layout {layout.name} has an object_state slot but no object_state was given")
            frames[:, :, i] = inject(object_state.float().to(frames.device), shape)
        elif slot.kind == "action" and action is not None:
            frames[:, :, i] = inject(action.reshape(b, -1).float().to(frames.device), shape)
        elif slot.kind == "value" and value is not None:
            frames[:, :, i] = inject(value.reshape(b, 1).float().to(frames.device), shape)
    return frames
