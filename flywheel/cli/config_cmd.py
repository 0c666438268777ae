"""``flywheel config show``: print the resolved configuration."""

from __future__ import annotations

import typer
from rich.syntax import Syntax

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, console, handle_errors, setup

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML.")) -> None:
    """Print the resolved config (profile -> YAML file -> --set overrides) and the workspace paths."""
    import yaml

    cfg, ws = setup(profile, config, set_, home)
    if as_json:
        console.print_json(cfg.to_json())
        return
    data = cfg.model_dump(mode="json")
    data["workspace"] = {"home": str(ws.home), "lake": str(ws.lake.root), "mlflow": ws.mlflow_uri,
                         "prefect_home": str(ws.prefect_home), "ray_temp": str(ws.ray_temp)}
    console.print(Syntax(yaml.safe_dump(data, sort_keys=False), "yaml", theme="ansi_dark"))
