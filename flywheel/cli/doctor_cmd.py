"""``flywheel doctor``."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, console, handle_errors, setup

CHECKS = "imports, mujoco-egl, libero-assets, lake, mlflow, ray, prefect"


@handle_errors
def doctor(
    skip: Annotated[str, typer.Option(help=f"Comma-separated checks to skip ({CHECKS}).")] = "",
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Check the installation for real (imports, EGL render, Ray, Prefect, MLflow, lake) and say what to fix."""
    from flywheel.doctor import run_checks

    cfg, ws = setup(profile, config, set_, home)

    def show(r) -> None:
        mark = "[green]ok[/]  " if r.ok else "[red]FAIL[/]"
        console.print(f"{mark} {r.name:<14} {r.seconds:6.1f}s  {r.detail}", highlight=False, soft_wrap=True)
        if not r.ok:
            console.print(f"      fix: {r.fix}", highlight=False)

    results = run_checks(cfg, ws, {s.strip() for s in skip.split(",") if s.strip()}, show)
    failed = [r.name for r in results if not r.ok]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    console.print(f"[green]all {len(results)} checks passed[/] (workspace {ws.home})")
