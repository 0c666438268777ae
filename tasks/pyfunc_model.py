"""MLflow pyfunc wrapper of a Cosmos Policy checkpoint, logged as *models from code* (loading never unpickles).

:func:`tasks.registry.log_and_register_model` logs this file together with the checkpoint folder (artifact
``checkpoint``). Loading needs this project installed (``cosmos_policy``, ``storage_schemas``) and, for a
checkpoint whose tokenizer/T5 point at local pretrained folders, those folders at the same paths.

Input: one row per environment with ``instruction`` (str), ``proprio`` (list of floats, the layout's proprio
dim), one column per layout camera holding PNG bytes and, for a layout with the privileged object-state frame,
``object_state`` (list of floats, the layout's object-state dim). Output: a DataFrame with column ``actions``, one
``K x A`` nested list per row (environment units).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd


class CosmosPolicyPyfunc(mlflow.pyfunc.PythonModel):
    """Batched ``CosmosPolicy.act`` behind the pyfunc interface."""

    def load_context(self, context: Any) -> None:
        import torch

        from cosmos_policy.policy import CosmosPolicy

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.policy = CosmosPolicy.from_checkpoint(context.artifacts["checkpoint"], device=device)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from sims.types import Observation
        from storage_schemas.records import decode_png

        layout = self.policy.layout
        extra = ("object_state",) if layout.object_state_dim else ()
        missing = [c for c in ("instruction", "proprio", *layout.camera_names, *extra) if c not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks columns {missing}; expected instruction, proprio, one PNG column per "
                             f"camera {list(layout.camera_names)}{' and object_state' if extra else ''}")
        observations, instructions = [], []
        for values in model_input.to_dict("records"):
            vectors = {k: _vector(values[k], dim, k) for k, dim in (("proprio", layout.proprio_dim),
                                                                    ("object_state", layout.object_state_dim)) if dim}
            images = {cam: decode_png(bytes(values[cam])) for cam in layout.camera_names}
            observations.append(Observation(images=images, **vectors))
            instructions.append(str(values["instruction"]))
        if not observations:
            return pd.DataFrame({"actions": []})
        actions = self.policy.act(observations, instructions)  # (B, K, A)
        return pd.DataFrame({"actions": [a.astype(np.float64).tolist() for a in actions]})


def _vector(value: Any, dim: int, name: str) -> np.ndarray:
    out = np.asarray(value, dtype=np.float32).reshape(-1)
    if out.shape[0] != dim:
        raise ValueError(f"{name} has {out.shape[0]} values, the checkpoint expects {dim}")
    return out


mlflow.models.set_model(CosmosPolicyPyfunc())
