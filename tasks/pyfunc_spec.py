"""Signature, input example and requirements of the Cosmos Policy pyfunc (:mod:`tasks.pyfunc_model`), built from a
checkpoint's metadata (``cosmos_policy.json``) so they describe exactly what that checkpoint consumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cosmos_policy.latent_layout import LatentLayout


def pyfunc_signature(meta: Mapping[str, Any]):
    """Honest pyfunc signature of a checkpoint: instruction, proprio, one PNG column per camera (and the object
    state when the layout has that frame) → actions."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    layout = LatentLayout.from_dict(meta["layout"])
    inputs = [ColSpec("string", "instruction"), ColSpec(Array("double"), "proprio")]
    inputs += [ColSpec("binary", cam) for cam in layout.camera_names]
    if layout.object_state_dim:
        inputs.append(ColSpec(Array("double"), "object_state"))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec(Array(Array("double")), "actions")]))


def pyfunc_input_example(meta: Mapping[str, Any]):
    """One row: a blank PNG of the tokenizer's image size per camera, zero proprio (and object state)."""
    import numpy as np
    import pandas as pd

    from storage_schemas.records import encode_png

    layout = LatentLayout.from_dict(meta["layout"])
    size = int(meta["config"].get("tokenizer", {}).get("image_size") or layout.latent_height * 8)
    png = encode_png(np.zeros((size, size, 3), dtype=np.uint8))
    row: dict[str, Any] = {"instruction": "pick up the object", "proprio": [0.0] * layout.proprio_dim}
    row.update({cam: png for cam in layout.camera_names})
    if layout.object_state_dim:
        row["object_state"] = [0.0] * layout.object_state_dim
    return pd.DataFrame([row])


def pip_requirements() -> list[str]:
    """Pinned runtime packages of the pyfunc (given explicitly: inferring them would load the model again).

    The pyfunc also imports this project (``cosmos_policy``, ``sims``, ``storage_schemas``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "torch", "safetensors", "numpy", "pandas", "pillow", "diffusers"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out
