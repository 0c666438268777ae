"""The workspace: one root folder (``$FLYWHEEL_HOME``, default ``./flywheel-home``) holding the lake,
MLflow's SQLite db and artifacts, Prefect's home and Ray's temp/logs."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage_schemas.layout import LakeLayout

_RAY_SOCKET_LIMIT = 60  # Ray's unix sockets live under its temp dir; AF_UNIX paths are limited to ~107 bytes


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Workspace:
        root = Path(home or os.environ.get("FLYWHEEL_HOME") or "flywheel-home").expanduser().resolve()
        return cls(root)

    @property
    def lake(self) -> LakeLayout:
        return LakeLayout(self.home / "lake")

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def latent_cache(self) -> Path:
        """Image latents per tokenizer fingerprint (:class:`cosmos_policy.latent_cache.LatentCache`)."""
        return self.home / "cache" / "latents"

    @property
    def libero_config(self) -> Path:
        return self.home / "libero"

    @property
    def ray_temp(self) -> Path:
        """Ray's temp dir: inside the workspace when the path is short enough for Ray's sockets."""
        inside = self.home / "ray"
        if len(str(inside)) <= _RAY_SOCKET_LIMIT:
            return inside
        return Path(tempfile.gettempdir()) / f"flywheel-ray-{hashlib.sha1(str(self.home).encode()).hexdigest()[:8]}"

    def ensure(self) -> Workspace:
        for d in (self.home, self.lake.root, self.mlflow_dir, self.mlflow_artifacts, self.prefect_home,
                  self.checkpoints, self.libero_config):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def export_env(self) -> None:
        """Point flows and Ray workers at this workspace (``--home`` already won over ``$FLYWHEEL_HOME``), and
        Prefect, LIBERO and MLflow at it unless the user set them."""
        os.environ["FLYWHEEL_HOME"] = str(self.home)
        os.environ.setdefault("PREFECT_HOME", str(self.prefect_home))
        os.environ.setdefault("LIBERO_CONFIG_PATH", str(self.libero_config))
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.mlflow_uri)
