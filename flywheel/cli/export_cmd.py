"""``flywheel export lerobot OUT``: lake episodes as a LeRobot v3 dataset (see ``flywheel/export.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import HomeOpt, UserError, console, handle_errors, setup

export_app = typer.Typer(help="Export lake episodes to other formats.", no_args_is_help=True)


@export_app.command("lerobot")
@handle_errors
def lerobot(
    out: Annotated[Path, typer.Argument(help="New folder for the dataset.")],
    where: Annotated[str, typer.Option(help="SQL predicate over the episodes view, e.g. \"source = 'rollout'\".")] = "true",
    fps: Annotated[int, typer.Option(help="Frames per second recorded in the dataset.")] = 20,
    home: HomeOpt = None,
) -> None:
    """Write lake episodes (demos or rollouts, with success, reward and value targets as features) as a LeRobot v3
    dataset through lerobot's own API; `LeRobotDataset(root=OUT)` reads it and `flywheel ingest OUT` takes it back."""
    from rich.progress import Progress

    from flywheel.export import ExportError, export_lerobot

    if fps < 1:
        raise UserError("--fps must be >= 1")
    _, ws = setup("cpu", None, None, home)
    with Progress(transient=True) as bar:
        task = bar.add_task("export", total=None)
        try:
            summary = export_lerobot(ws.lake, out, where, fps, on_episode=lambda n: bar.update(task, completed=n))
        except ExportError as exc:
            raise UserError(str(exc)) from None
    console.print(f"exported {summary.episodes} episodes ({summary.frames} frames, cameras "
                  f"{', '.join(summary.cameras)}) to {summary.out}", highlight=False)
