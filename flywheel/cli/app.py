"""The ``flywheel`` command line (typer). One module per command; heavy imports happen inside commands."""

from __future__ import annotations

import typer

from flywheel.cli import config_cmd
from flywheel.cli.cycle_cmds import cycle, serve
from flywheel.cli.doctor_cmd import doctor
from flywheel.cli.export_cmd import export_app
from flywheel.cli.flow_cmds import collect
from flywheel.cli.ingest_cmd import ingest
from flywheel.cli.model_cmds import model_app
from flywheel.cli.query_cmd import query, report
from flywheel.cli.sim_cmds import demos_app, rollout
from flywheel.cli.train_cmd import train

app = typer.Typer(
    name="flywheel",
    help="Cosmos Policy data-and-experience flywheel: lake, training, rollouts, planning, MLflow, Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.command()(doctor)
app.command()(ingest)
app.command()(query)
app.command()(report)
app.command()(rollout)
app.command()(collect)
app.command()(train)
app.command()(cycle)
app.command()(serve)
app.add_typer(demos_app, name="demos")
app.add_typer(model_app, name="model")
app.add_typer(export_app, name="export")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
