"""Text conditioning for cross-attention: T5 embeddings when local weights exist, else a fixed per-task table.

Both return ``(B, L, D)`` float32 tensors that go through the transformer's cross-attention unchanged.
Embeddings are cached per instruction inside the encoder object (no module-level state).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from cosmos_policy.configuration_cosmos_policy import TextConfig, config_folder


class HashTextEmbedder:
    """Deterministic stand-in: each instruction maps to a fixed ``(L, D)`` Gaussian table seeded by its hash.

    Args:
        num_tokens: L.
        dim: D (the backbone's ``text_embed_dim``).
        seed: mixed into every instruction's seed.
    """

    def __init__(self, num_tokens: int, dim: int, seed: int = 0) -> None:
        self.num_tokens, self.dim, self.seed = num_tokens, dim, seed
        self._cache: dict[str, torch.Tensor] = {}

    def embed_one(self, instruction: str) -> torch.Tensor:
        if instruction not in self._cache:
            digest = hashlib.sha256(f"{self.seed}:{instruction.strip().lower()}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            self._cache[instruction] = torch.randn(self.num_tokens, self.dim, generator=gen)
        return self._cache[instruction]

    def __call__(self, instructions: Sequence[str]) -> torch.Tensor:
        """``B`` strings → ``(B, L, D)``."""
        return torch.stack([self.embed_one(s) for s in instructions])

    def to(self, device: str | torch.device) -> HashTextEmbedder:
        """Nothing to move (tables are made on the CPU and moved by the caller)."""
        return self


class PrecomputedTextEmbedder:
    """Embeddings computed elsewhere (e.g. by the driver's T5, then shipped to training workers that have no T5).

    Args:
        table: instruction → ``(L, D)`` tensor; an instruction outside it raises ``KeyError``.
    """

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = dict(table)

    def __call__(self, instructions: Sequence[str]) -> torch.Tensor:
        missing = sorted({s for s in instructions if s not in self.table})
        if missing:
            raise KeyError(f"no precomputed text embedding for {missing}")
        return torch.stack([self.table[s] for s in instructions])

    def to(self, device: str | torch.device) -> PrecomputedTextEmbedder:
        return self


def t5_folders(path: str | Path) -> tuple[Path, Path]:
    """``(encoder folder, tokenizer folder)`` of a local T5: one folder holding both, or a diffusers pipeline
    folder with ``text_encoder/`` and ``tokenizer/`` subfolders (as Cosmos-Predict2 ships)."""
    root = Path(path)
    encoder = config_folder(root, "text_encoder", "T5 encoder")
    if encoder != root and (root / "tokenizer").is_dir():
        return encoder, root / "tokenizer"
    return encoder, root


class T5TextEmbedder:
    """T5 encoder embeddings (Cosmos-Predict2 uses T5-11B's encoder, D = 1024) from a local folder, padded to L tokens.

    Args:
        path: see :func:`t5_folders`.
        num_tokens: L; longer instructions are truncated, shorter ones padded (padded positions are zero).
        device: where the encoder runs (see :meth:`to`; bfloat16 on CUDA, float32 elsewhere).
    """

    def __init__(self, path: str | Path, num_tokens: int = 512, device: str | torch.device = "cpu") -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        encoder, tokenizer = t5_folders(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.model = T5EncoderModel.from_pretrained(str(encoder)).eval()
        self.model.requires_grad_(False)
        self.num_tokens, self.device = num_tokens, torch.device("cpu")
        self.dim = int(self.model.config.d_model)
        self._cache: dict[str, torch.Tensor] = {}
        self.to(device)

    def to(self, device: str | torch.device) -> T5TextEmbedder:
        """Run the encoder on ``device`` (bfloat16 on CUDA: the 11B encoder is 19 GB in float32). Cached
        embeddings are kept; they are float32 on the CPU and moved by the caller."""
        device = torch.device(device)
        if device != self.device:
            self.model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
            self.device = device
        return self

    @torch.no_grad()
    def embed_one(self, instruction: str) -> torch.Tensor:
        if instruction not in self._cache:
            tok = self.tokenizer([instruction], max_length=self.num_tokens, padding="max_length",
                                 truncation=True, return_tensors="pt").to(self.device)
            hidden = self.model(**tok).last_hidden_state[0].float().cpu()
            hidden[tok["attention_mask"][0].cpu() == 0] = 0.0  # Cosmos zeroes padded positions
            self._cache[instruction] = hidden
        return self._cache[instruction]

    def __call__(self, instructions: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.embed_one(s) for s in instructions])


def build_text_embedder(config: TextConfig, dim: int,
                        device: str | torch.device = "cpu") -> HashTextEmbedder | T5TextEmbedder:
    """T5 when ``config.t5_path`` is set, else the deterministic table."""
    if config.t5_path:
        embedder = T5TextEmbedder(config.t5_path, config.num_tokens, device)
        if embedder.dim != dim:
            raise ValueError(f"T5 width {embedder.dim} != backbone text_embed_dim {dim}")
        return embedder
    return HashTextEmbedder(config.num_tokens, dim, config.seed)
