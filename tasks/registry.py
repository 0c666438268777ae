"""MLflow model versioning: register checkpoints as pyfunc models, resolve ``models:/`` URIs to local folders.

A *model reference* is one of

* a local checkpoint folder (``model.safetensors`` + ``cosmos_policy.json``): version label ``sha-<digest>``;
* ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: downloaded once into ``<cache_root>/NAME/VERSION/``,
  version label ``NAME/v<VERSION>``.

Registered versions are immutable: every :func:`log_and_register_model` call makes a new version, tagged
with the checkpoint's content digest (:func:`checkpoint_digest`). Plain functions, no Prefect.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch (and diffusers) load lazily: the CLI imports this module
    from cosmos_policy.latent_layout import LatentLayout

META_NAME, WEIGHTS_NAME = "cosmos_policy.json", "model.safetensors"  # cosmos_policy.checkpoint_io's names
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as code, never pickled
LOGGED_MODEL_NAME = "cosmos_policy"
MAX_PARAM_CHARS = 6000  # MLflow truncates (or refuses) longer parameter values
# No retries; a server that answers may still be slow on its first request (it creates its tables then).
_FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class RegistryError(ValueError):
    """A user-facing registry problem: unreachable tracking server, unknown model/alias/version, not a checkpoint."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registered version: ``uri`` is ``models:/NAME/VERSION``; ``artifact_uri`` where the pyfunc lives."""

    name: str
    version: int
    uri: str
    model_id: str
    artifact_uri: str
    digest: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made local: ``path`` is a checkpoint folder, ``version_label`` goes into the lake."""

    path: Path
    version_label: str
    registered: bool


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sqlite_path(uri: str) -> Path | None:
    """``sqlite:///rel.db`` / ``sqlite:////abs.db`` → the file (None for an in-memory database)."""
    rest = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    return Path(rest.split("?", 1)[0]) if rest and rest != ":memory:" else None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    errno = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)  # e.g. "[Errno 111] Connection refused"
    if errno:
        return errno.group(0).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def tcp_error(address: str, default_port: int | None = None, timeout: float = 3.0) -> str | None:
    """Why nothing answers at ``address`` (``host:port`` or a URL), or None when a TCP connection succeeds."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    port = parsed.port or default_port
    if not parsed.hostname or not port:
        return f"no host:port in {address!r}"
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return _short(exc)
    return None


def check_tracking(uri: str) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when the tracking store cannot be used."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        from mlflow import MlflowClient

        error = tcp_error(uri, 443 if scheme == "https" else 80)  # nothing listening: fail in seconds
        if error:
            raise RegistryError(f"MLflow tracking server {uri} is unreachable: {error}; start it or unset "
                                f"MLFLOW_TRACKING_URI / mlflow.tracking_uri")
        with _env(_FAST_FAIL_ENV):
            try:
                MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
            except Exception as exc:  # connection refused, DNS, TLS, HTTP errors: all mean "cannot use it"
                raise RegistryError(f"MLflow tracking server {uri} is unreachable: {_short(exc)}; start it or unset "
                                    f"MLFLOW_TRACKING_URI / mlflow.tracking_uri") from None
    elif scheme == "sqlite":
        db = _sqlite_path(uri)
        if db is None:
            return
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"MLflow database folder {db.parent} cannot be created: {_short(exc)}") from None
        target = db if db.exists() else db.parent
        if not os.access(target, os.W_OK):
            raise RegistryError(f"MLflow database {db} is not writable ({target} is read-only)")


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": "1", "c": "[1, 2]"}`` (values cut to MLflow's limit)."""
    out: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
            continue
        if isinstance(value, Mapping):
            text = "{}"
        elif isinstance(value, list | tuple | set | frozenset):
            text = json.dumps(sorted(value, key=str) if isinstance(value, set | frozenset) else list(value),
                              default=str)
        else:
            text = str(value)
        out[name] = text[:MAX_PARAM_CHARS]
    return out


def _read_meta(folder: str | Path) -> dict[str, Any]:
    if not (Path(folder) / META_NAME).is_file():  # before importing torch: a wrong path fails at once
        raise RegistryError(f"{Path(folder) / META_NAME} not found: not a cosmos_policy checkpoint folder")
    from cosmos_policy.checkpoint_io import read_metadata

    try:
        return read_metadata(folder)
    except (OSError, ValueError) as exc:
        raise RegistryError(str(exc)) from None


def _layout(meta: Mapping[str, Any]) -> LatentLayout:
    from cosmos_policy.latent_layout import LatentLayout

    return LatentLayout.from_dict(meta["layout"])


def _without_paths(data: Any) -> Any:
    """Drop ``*path`` entries (where external pretrained folders live is not the model's content)."""
    if isinstance(data, Mapping):
        return {k: _without_paths(v) for k, v in data.items() if not str(k).endswith("path")}
    if isinstance(data, list | tuple):
        return [_without_paths(v) for v in data]
    return data


def checkpoint_digest(folder: str | Path) -> str:
    """sha256 (first 16 hex) of the weights bytes and the config/layout/normalisation/components of a checkpoint.

    Independent of where the folder is and of its free-form ``extra`` metadata: the same model at two paths
    has one digest; a new model written over an old folder gets a new one.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    content = _without_paths({k: meta[k] for k in ("config", "layout", "normalization", "components") if k in meta})
    h = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise RegistryError(f"{weights} not found: not a complete cosmos_policy checkpoint folder")
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- logging and registering
@contextlib.contextmanager
def _inside_run(client: Any, run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run for the block, leaving its status as it was."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    try:
        status = client.get_run(run_id).info.status
    except Exception as exc:
        raise RegistryError(f"MLflow run {run_id!r} not found: {_short(exc)}") from None
    mlflow.start_run(run_id=run_id, nested=active is not None)
    try:
        yield
    finally:
        terminal = status in ("FINISHED", "FAILED", "KILLED")
        mlflow.end_run(status=status if terminal else "FINISHED")
        if not terminal:
            client.update_run(run_id, status=status)


def set_alias(model_name: str, alias: str, version: int, tracking_uri: str | None = None) -> None:
    """Point ``models:/NAME@ALIAS`` at ``version``."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        model_name, alias, str(version))


def delete_alias(model_name: str, alias: str, tracking_uri: str | None = None) -> None:
    """Remove ``models:/NAME@ALIAS`` if it exists."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return
    client.delete_registered_model_alias(model_name, alias)


def log_and_register_model(run_id: str, checkpoint_dir: str | Path, model_name: str, alias: str | None = "candidate",
                           tracking_uri: str | None = None) -> RegisteredModel:
    """Log a checkpoint as a pyfunc model inside run ``run_id`` and register it as a new version of ``model_name``.

    The version is tagged ``checkpoint_digest``; ``alias`` (when not None) is moved to it. Uses the current
    MLflow tracking/registry URI unless ``tracking_uri`` is given.
    """
    import warnings

    import mlflow

    from tasks.pyfunc_spec import pip_requirements, pyfunc_input_example, pyfunc_signature

    folder = Path(checkpoint_dir).expanduser().resolve()
    meta = _read_meta(folder)
    digest = checkpoint_digest(folder)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    layout = _layout(meta)
    tags = {"checkpoint_digest": digest, "layout": layout.name, "preset": str(meta["config"].get("preset")),
            "cameras": ",".join(layout.camera_names)}
    quiet = _env({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    with _inside_run(client, run_id), quiet, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(type hints|Operation with range is deprecated).*")
        info = mlflow.pyfunc.log_model(name=LOGGED_MODEL_NAME, python_model=str(PYFUNC_CODE),
                                       artifacts={"checkpoint": str(folder)}, signature=pyfunc_signature(meta),
                                       input_example=pyfunc_input_example(meta), registered_model_name=model_name,
                                       pip_requirements=pip_requirements(), tags=tags)
    version = int(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    if alias:
        client.set_registered_model_alias(model_name, alias, str(version))
    return RegisteredModel(model_name, version, f"models:/{model_name}/{version}", info.model_id,
                           info.artifact_path, digest)


# ---------------------------------------------------------------- resolving references
def _parse_models_uri(ref: str) -> tuple[str, str, bool]:
    """``models:/NAME@ALIAS`` → (NAME, ALIAS, True); ``models:/NAME/VERSION`` → (NAME, VERSION, False)."""
    rest = ref[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, alias, True
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and (version.isdigit() or version == "latest"):
            return name, version, False
    raise RegistryError(f"{ref!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION (a registered model; "
                        f"register a logged model first)")


def _describe_model(client: Any, name: str) -> str:
    """What exists under ``name`` (or which models exist), for error messages."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        return f"no registered model {name!r}; registered models: {', '.join(names) or 'none'}"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"model {name!r} has aliases: {aliases}; versions: {', '.join(map(str, versions)) or 'none'}"


def _lookup_version(client: Any, ref: str, name: str, selector: str, is_alias: bool) -> int:
    from mlflow.exceptions import MlflowException

    try:
        if is_alias:
            return int(client.get_model_version_by_alias(name, selector).version)
        if selector == "latest":
            versions = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
            if versions:
                return max(versions)
            raise LookupError
        return int(client.get_model_version(name, selector).version)
    except (MlflowException, LookupError):
        what = f"alias {selector!r}" if is_alias else f"version {selector}"
        raise RegistryError(f"{ref}: unknown {what}; {_describe_model(client, name)}") from None


def _find_checkpoint(root: Path) -> Path | None:
    hits = sorted(root.rglob(META_NAME), key=lambda p: len(p.parts)) if root.is_dir() else []
    return hits[0].parent if hits else None


def _download(client: Any, name: str, version: int, dest: Path, uri: str) -> Path:
    """Download ``models:/NAME/VERSION`` into ``dest`` (atomically: a half-done download is never reused)."""
    import mlflow

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with _env({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(tmp), tracking_uri=uri,
                                                registry_uri=uri)
        found = _find_checkpoint(tmp)
        if found is None:
            raise RegistryError(f"models:/{name}/{version} holds no {META_NAME}: not a Cosmos Policy model")
        expected = client.get_model_version(name, str(version)).tags.get("checkpoint_digest")
        if expected and checkpoint_digest(found) != expected:
            raise RegistryError(f"models:/{name}/{version}: downloaded checkpoint digest differs from the "
                                f"registered {expected}")
        inner = found.relative_to(tmp)
        if (dest / inner / META_NAME).is_file():  # another process finished the same download first
            return dest / inner
        if dest.exists():  # an incomplete copy
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / inner


def resolve_model(ref: str | Path, cache_root: str | Path, tracking_uri: str | None = None) -> ResolvedModel:
    """A local checkpoint folder, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` → a local checkpoint folder."""
    ref = str(ref)
    if ref.startswith("runs:/"):
        raise RegistryError(f"{ref!r}: runs:/ URIs are not supported; register the model and pass "
                            f"models:/NAME@ALIAS or models:/NAME/VERSION, or a local checkpoint folder")
    if ref.startswith("models:/"):
        return _resolve_registered(ref, Path(cache_root), tracking_uri)
    if "://" in ref or ref.startswith("models:"):
        raise RegistryError(f"{ref!r}: unsupported model URI; pass a checkpoint folder, models:/NAME@ALIAS or "
                            f"models:/NAME/VERSION")
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise RegistryError(f"checkpoint folder {path} does not exist")
    _read_meta(path)
    return ResolvedModel(path.resolve(), f"sha-{checkpoint_digest(path)}", registered=False)


def _resolve_registered(ref: str, cache_root: Path, tracking_uri: str | None) -> ResolvedModel:
    name, selector, is_alias = _parse_models_uri(ref)
    from mlflow import MlflowClient, get_tracking_uri

    uri = tracking_uri or get_tracking_uri()
    check_tracking(uri)
    db = _sqlite_path(uri) if uri.startswith("sqlite:") else None
    if db is not None and not db.exists():
        raise RegistryError(f"{ref}: nothing is registered yet (no MLflow database at {db})")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = _lookup_version(client, ref, name, selector, is_alias)
    dest = cache_root / name / str(version)
    path = _find_checkpoint(dest) or _download(client, name, version, dest, uri)
    return ResolvedModel(path, f"{name}/v{version}", registered=True)


# ---------------------------------------------------------------- layout compatibility
def check_layout(path: str | Path, suite: str, preset: str | None = None, chunk_size: int | None = None) -> LatentLayout:
    """Refuse a checkpoint whose layout cannot drive ``suite`` (cameras, proprio/action dims, chunk size).

    Args:
        path: checkpoint folder.
        suite: e.g. ``libero_object`` or ``robocasa_fixture``.
        preset: size preset to require (its image size fixes the latent size); None = the checkpoint's own
            latent size.
        chunk_size: action chunk K to require; None = the checkpoint's.

    Returns:
        The checkpoint's layout.
    """
    from cosmos_policy.latent_layout import layout_mismatch
    from flywheel.model_setup import PRESET_IMAGE_SIZE, ModelSetupError, layout_for_suite

    meta = _read_meta(path)
    saved = _layout(meta)
    k = chunk_size or saved.chunk_size
    if preset is not None and preset not in PRESET_IMAGE_SIZE:
        raise RegistryError(f"unknown preset {preset!r}; expected one of {sorted(PRESET_IMAGE_SIZE)}")
    hw = PRESET_IMAGE_SIZE[preset] // 8 if preset else None
    try:
        expected = replace(layout_for_suite(suite, "tiny", k), object_state_dim=saved.object_state_dim,
                           latent_channels=saved.latent_channels, latent_height=hw or saved.latent_height,
                           latent_width=hw or saved.latent_width)
    except (ModelSetupError, ValueError) as exc:  # unknown suite; the suite's vectors do not fit these latents
        raise RegistryError(f"checkpoint {path} cannot drive suite {suite!r}: {exc}") from None
    diffs = layout_mismatch(expected, saved)
    if diffs:
        raise RegistryError(
            f"checkpoint {path} has layout {saved.name!r} ({len(saved.camera_names)} cameras "
            f"{list(saved.camera_names)}, proprio {saved.proprio_dim}, action {saved.action_dim}, K={saved.chunk_size})"
            f" but suite {suite!r} needs {expected.name!r} ({len(expected.camera_names)} cameras "
            f"{list(expected.camera_names)}, proprio {expected.proprio_dim}, action {expected.action_dim}, "
            f"K={expected.chunk_size}); differences: {'; '.join(diffs)}"
            + ("; model.chunk_size must equal the checkpoint's K" if saved.chunk_size != expected.chunk_size else ""))
    return saved


# ---------------------------------------------------------------- pretrained components
def check_components(path: str | Path, vae_path: str | Path | None = None,
                     t5_path: str | Path | None = None) -> dict[str, str | None]:
    """Find the tokenizer / text-encoder folders a checkpoint was trained with (by content fingerprint) before any
    work, and return them as ``vae_path`` / ``t5_path`` keyword arguments for loading. Raises
    ``RegistryError`` naming the fingerprint and the folders tried."""
    from cosmos_policy.checkpoint_io import with_components
    from cosmos_policy.components import ComponentError
    from cosmos_policy.configuration_cosmos_policy import CosmosPolicyConfig

    meta = _read_meta(path)
    try:
        config = with_components(CosmosPolicyConfig.from_dict(meta["config"]), meta, path, vae_path, t5_path)
    except ComponentError as exc:
        raise RegistryError(str(exc)) from None
    return {"vae_path": config.tokenizer.path if config.tokenizer.kind == "wan" else None,
            "t5_path": config.text.t5_path}
