"""``flywheel train``: fine-tune (or refine) Cosmos Policy on Ray Train; the result is a registered MLflow version."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup


@handle_errors
def train(
    suite: Annotated[str | None, typer.Option(help="Suite to train on (default: the profile's first sim.suites).")] = None,
    init: Annotated[str | None, typer.Option(help="Start from a checkpoint folder, models:/NAME@ALIAS or "
                                                   "models:/NAME/VERSION (default: model.weights_path or the "
                                                   "random model.preset).")] = None,
    mix: Annotated[str, typer.Option(help="base = 50/25/25 policy/world-model/value from demos; refine = 90% "
                                          "rollouts (world model + value) / 10% demos (policy).")] = "base",
    where: Annotated[str | None, typer.Option(help="Extra SQL predicate over the episodes view.")] = None,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Train on Ray Train (resumes a crashed run of the same training), log every step to MLflow, register the
    model under mlflow.model_name with the alias `candidate`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tasks.training import TrainingError, train_model

    if mix not in ("base", "refine"):
        raise UserError(f"--mix must be base or refine, got {mix!r}")
    cfg, ws = setup(profile, config, set_, home)
    suite = suite or cfg.sim.suites[0]
    columns = (TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[sps]} samples/s"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task_id = bar.add_task("train", total=None, loss="-", sps="-")

        def on_progress(state: dict) -> None:
            bar.update(task_id, total=state.get("total"), completed=state.get("step", 0),
                       loss=f"{state['loss']:.4f}" if "loss" in state else "-",
                       sps=f"{state['samples_per_s']:.0f}" if "samples_per_s" in state else "-")

        try:
            result = train_model(cfg, ws, suite, init=init, mix=mix, where=where, on_progress=on_progress)  # type: ignore[arg-type]
        except TrainingError as exc:
            raise UserError(str(exc)) from None
    m = result.metrics
    if result.resumed_from_step:
        console.print(f"resumed from step {result.resumed_from_step}")
    console.print(f"{result.steps} steps; loss {m.get('loss', float('nan')):.4f}, action L1 "
                  f"{m.get('action_l1', float('nan')):.4f}, value MAE {m.get('value_mae', float('nan')):.4f}; "
                  f"checkpoint {result.checkpoint}")
    console.print(f"MLflow run {result.run_id} ({result.run_name}); registered {result.model_uri} with alias "
                  f"candidate (models:/{result.model_name}@candidate)")
