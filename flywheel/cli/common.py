"""Options and error handling shared by every ``flywheel`` command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flywheel.compat import set_default_env
from flywheel.config import ConfigError, FlywheelConfig, load_config
from flywheel.workspace import Workspace

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Config profile: smoke | cpu | paper.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file overriding the profile.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Dotted override, e.g. train.steps=50 (repeatable).")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Workspace root (default $FLYWHEEL_HOME or ./flywheel-home).")]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from flywheel.episodes import EpisodeReadError
    from flywheel.ingest.common import IngestError
    from flywheel.model_setup import ModelSetupError
    from storage_schemas.writer import LakeError
    from tasks.iteration import CycleError
    from tasks.registry import RegistryError

    return (UserError, ConfigError, IngestError, LakeError, FileNotFoundError, ModelSetupError, EpisodeReadError,
            RegistryError, CycleError)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into one clear line on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _user_errors() as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def setup(profile: str = "cpu", config: Path | None = None, overrides: list[str] | None = None,
          home: Path | None = None) -> tuple[FlywheelConfig, Workspace]:
    """Resolve config and workspace and export the environment every stage expects."""
    set_default_env()
    cfg = load_config(profile, config, overrides or [])
    ws = Workspace.from_env(home).ensure()
    ws.export_env()
    return cfg, ws


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)
