"""``flywheel ingest PATH``: demonstrations (LeRobot dataset or HDF5) into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup


@handle_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="LeRobot dataset folder, HDF5 file, or folder of HDF5 files.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto | lerobot | hdf5")] = "auto",
    suite: Annotated[str | None, typer.Option(help="Suite for every episode (default: LIBERO task lookup).")] = None,
    dataset_id: Annotated[str | None, typer.Option(help="Dataset id stored on every row.")] = None,
    camera_map: Annotated[list[str] | None, typer.Option(help="SOURCE=CANONICAL camera name (repeatable).")] = None,
    proprio_keys: Annotated[str | None, typer.Option(help="HDF5: comma-separated obs keys forming proprio.")] = None,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="HDF5: images are already upright.")] = False,
    state_key: Annotated[str | None, typer.Option(help="LeRobot: feature read as proprio (default observation.state).")] = None,
    action_key: Annotated[str | None, typer.Option(help="LeRobot: feature read as action (default action).")] = None,
    success_key: Annotated[str | None, typer.Option(help="LeRobot: terminal success feature (default next.success; "
                                                         "none = every episode a successful demo).")] = None,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Ingest demonstrations, compute normalisation statistics and print what was ingested."""
    from flywheel.ingest import IngestOptions
    from flywheel.ingest import ingest as run_ingest
    from storage_schemas import LakeWriter

    if fmt not in ("auto", "lerobot", "hdf5"):
        raise UserError(f"--format must be auto, lerobot or hdf5 (got {fmt!r})")
    cmap = {}
    for item in camera_map or []:
        if "=" not in item:
            raise UserError(f"--camera-map {item!r} must look like SOURCE=CANONICAL")
        k, v = item.split("=", 1)
        cmap[k] = v
    cfg, ws = setup(profile, config, set_, home)
    opts = IngestOptions(
        suite=suite, dataset_id=dataset_id, image_size=cfg.sim.image_size, image_every=cfg.demos.image_every,
        camera_map=cmap, flip_images=False if no_flip else None, gamma=cfg.model.gamma,
        proprio_keys=tuple(k.strip() for k in proprio_keys.split(",")) if proprio_keys else None,
        state_key=state_key, action_key=action_key, success_key=success_key,
    )
    writer = LakeWriter(ws.lake)
    with Progress(SpinnerColumn(), TextColumn("[bold]ingest[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(str(path), total=None)
        summary = run_ingest(path, writer, opts, fmt=fmt, on_episode=lambda ep: progress.advance(task))  # type: ignore[arg-type]
    table = RichTable(title=f"Ingested {summary.source} ({summary.format})")
    for col in ("suite", "episodes"):
        table.add_column(col)
    for s, n in sorted(summary.suites.items()):
        table.add_row(s, str(n))
    console.print(table)
    console.print(f"episodes: {summary.episodes}  steps: {summary.steps}  replaced (already in lake): {summary.replaced}  "
                  f"cameras: {', '.join(summary.cameras) or 'none'}")
    console.print(f"normalisation stats: {', '.join(str(ws.lake.stats_path(s)) for s in sorted(summary.suites))}")
