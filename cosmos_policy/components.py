"""The frozen components a checkpoint depends on — the image tokenizer and the text encoder — named by kind and
content fingerprint, so that a checkpoint folder moved to another path or machine finds them again.

A checkpoint records, for each component, ``{"kind", "fingerprint", "saved_path"}``:

* ``tokenizer``: ``wan`` (the Wan 2.1 VAE, fingerprint = digest of its ``config.json`` and weights) or the
  ``pixel_shuffle`` stand-in (fingerprint from its settings);
* ``text_encoder``: ``t5`` (digest of the encoder's ``config.json`` and weights plus the tokenizer files) or the
  ``hash`` stand-in (fingerprint from its settings).

Loading resolves each pretrained component from, in order: the folder the caller passes (``vae_path`` /
``t5_path``), a copy inside the checkpoint folder (``<checkpoint>/vae/``, ``<checkpoint>/text_encoder/`` +
``tokenizer/``), and last the path it was saved from. The first candidate whose fingerprint matches is used;
when folders exist but none matches, :class:`ComponentMismatchError`; when none exists,
:class:`ComponentNotFoundError`. ``saved_path`` is only a hint: the fingerprint decides.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig, config_folder


class ComponentError(ValueError):
    """A checkpoint's tokenizer or text encoder cannot be resolved."""


class ComponentNotFoundError(ComponentError):
    """No folder holding the component was found."""


class ComponentMismatchError(ComponentError):
    """Folders were found, but none holds the component the checkpoint was trained with."""


def _files_signature(files: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=32)
def _digest(signature: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the files' names and bytes (memoised on path, size and mtime: a 10 GB encoder is hashed once
    per process, ~1 s per GB)."""
    h = hashlib.sha256()
    for name, _, _ in signature:
        path = Path(name)
        h.update(path.name.encode())
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def _weights_files(folder: Path) -> list[Path]:
    return [folder / "config.json", *sorted(folder.glob("*.safetensors")), *sorted(folder.glob("*.bin"))]


def vae_fingerprint(path: str | Path) -> str:
    """``wan-<digest>`` of a Wan VAE folder (the folder itself or a pipeline folder's ``vae/``)."""
    folder = config_folder(path, "vae", "AutoencoderKLWan")
    return "wan-" + _digest(_files_signature(_weights_files(folder)))


def t5_fingerprint(path: str | Path) -> str:
    """``t5-<digest>`` of a local T5 (encoder config + weights, and the tokenizer's files)."""
    from cosmos_policy.text_conditioning import t5_folders

    encoder, tokenizer = t5_folders(path)
    tok_files = sorted(p for p in tokenizer.iterdir() if p.is_file() and p.suffix in (".json", ".model", ".txt"))
    weights = _weights_files(encoder)
    return "t5-" + _digest(_files_signature([*weights, *[f for f in tok_files if f not in weights]]))


def _pixel_shuffle_fp(config: CosmosPolicyConfig) -> str:
    tok = config.tokenizer
    return f"pixel_shuffle-v1-s{tok.image_size}-c{tok.latent_channels}-seed{tok.seed}"


def _hash_fp(config: CosmosPolicyConfig) -> str:
    return f"hash-v1-L{config.text.num_tokens}-seed{config.text.seed}"


def component_records(config: CosmosPolicyConfig) -> dict[str, dict[str, Any]]:
    """What a checkpoint of ``config`` records about its tokenizer and text encoder."""
    tok, text = config.tokenizer, config.text
    if tok.kind == "wan":
        tokenizer = {"kind": "wan", "fingerprint": vae_fingerprint(tok.path or ""), "saved_path": tok.path}
    else:
        tokenizer = {"kind": tok.kind, "fingerprint": _pixel_shuffle_fp(config), "saved_path": None}
    if text.t5_path:
        encoder = {"kind": "t5", "fingerprint": t5_fingerprint(text.t5_path), "saved_path": text.t5_path}
    else:
        encoder = {"kind": "hash", "fingerprint": _hash_fp(config), "saved_path": None}
    return {"tokenizer": tokenizer, "text_encoder": encoder}


def _pick(record: Mapping[str, Any] | None, candidates: list[str | Path | None], fingerprint: Any, what: str,
          flag: str, checkpoint: Path, bundled: str) -> str:
    found: list[tuple[str, str]] = []
    for cand in candidates:
        if cand is None:
            continue
        try:
            fp = fingerprint(cand)
        except (FileNotFoundError, NotADirectoryError, OSError):
            continue
        if record is None or fp == record["fingerprint"]:
            return str(cand)
        found.append((str(cand), fp))
    want = record["fingerprint"] if record else "(unrecorded)"
    if found:
        seen = "; ".join(f"{p} is {fp}" for p, fp in found)
        raise ComponentMismatchError(
            f"checkpoint {checkpoint} was trained with the {what} {want}, but no available folder holds it ({seen}); "
            f"pass the matching folder as {flag}")
    hint = record.get("saved_path") if record else None
    raise ComponentNotFoundError(
        f"checkpoint {checkpoint} needs the {what} {want}{f' (saved from {hint}, not found here)' if hint else ''}; "
        f"pass its folder as {flag} or copy it into {checkpoint / bundled}")


def resolve_components(config: CosmosPolicyConfig, records: Mapping[str, Any] | None, checkpoint: str | Path,
                       vae_path: str | Path | None = None, t5_path: str | Path | None = None) -> CosmosPolicyConfig:
    """``config`` with its tokenizer / text-encoder folders resolved (see the module docstring).

    Stand-in components need no folder. A checkpoint without records (written before they existed) takes the
    first folder that exists, unchecked.
    """
    records = records or {}
    ckpt = Path(checkpoint)
    tok, text = config.tokenizer, config.text
    if tok.kind == "wan":
        path = _pick(records.get("tokenizer"), [vae_path, ckpt / "vae", tok.path], vae_fingerprint,
                     "Wan VAE tokenizer", "vae_path (model.vae_path)", ckpt, "vae")
        config = replace(config, tokenizer=replace(tok, path=path))
    if text.t5_path:
        bundled = ckpt if (ckpt / "text_encoder").is_dir() else None
        path = _pick(records.get("text_encoder"), [t5_path, bundled, text.t5_path], t5_fingerprint,
                     "T5 text encoder", "t5_path (model.t5_path)", ckpt, "text_encoder")
        config = replace(config, text=replace(text, t5_path=path))
    return config


def check_stand_ins(config: CosmosPolicyConfig, records: Mapping[str, Any] | None) -> None:
    """Refuse a checkpoint whose recorded stand-in differs from the one its config describes (corruption)."""
    tok, text = config.tokenizer, config.text
    own = {"tokenizer": _pixel_shuffle_fp(config) if tok.kind != "wan" else None,
           "text_encoder": _hash_fp(config) if not text.t5_path else None}
    for role, fp in own.items():
        rec = (records or {}).get(role)
        if fp is not None and rec is not None and rec["fingerprint"] != fp:
            raise ComponentMismatchError(f"checkpoint records the {role} {rec['fingerprint']} but its config "
                                         f"describes {fp}")
