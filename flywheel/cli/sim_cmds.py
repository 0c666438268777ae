"""``flywheel demos generate`` and ``flywheel rollout``: simulation on Ray, episodes streamed to the lake."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup

demos_app = typer.Typer(help="Scripted-expert demonstrations.", no_args_is_help=True)


def _parse_tasks(tasks: str | None) -> list[int] | None:
    if not tasks:
        return None
    try:
        return [int(t) for t in tasks.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--tasks must be comma-separated integers (got {tasks!r})") from None


def _run_with_progress(label: str, fn, **kwargs):
    with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("success {task.fields[succ]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        bar = progress.add_task(label, total=None, succ="-")

        def on_start(total: int) -> None:
            progress.update(bar, total=total)

        def on_episode(req, rec, stats) -> None:
            progress.update(bar, completed=stats.done, succ=f"{stats.successes}/{stats.done} ({stats.success_rate:.0%})")

        return fn(on_episode=on_episode, on_start=on_start, **kwargs)


def _print_summary(summary, title: str) -> None:
    table = RichTable(title=title)
    rows = summary.table()
    for col in (rows[0].keys() if rows else ["suite"]):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    console.print(f"{summary.episodes} episodes, {summary.successes} successes, {summary.errors} errors, "
                  f"{summary.retries} retries, {summary.env_steps} env steps in {summary.wall_s:.1f}s; "
                  f"{summary.written} written to the lake as source={summary.source}")


def _check_suite(suite: str) -> None:
    from sims.factory import valid_suites

    if not (suite.startswith("libero_") or suite.startswith("robocasa_")):
        raise UserError(f"unknown suite {suite!r}; valid suites: {', '.join(valid_suites())}")


@demos_app.command("generate")
@handle_errors
def demos_generate(
    suite: Annotated[str, typer.Option(help="Suite, e.g. libero_object.")] = "libero_object",
    tasks: Annotated[str | None, typer.Option(help="Comma-separated task ids (default: profile's sim.tasks, else all).")] = None,
    per_task: Annotated[int | None, typer.Option(help="Expert attempts per task (default: demos.per_task).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray env workers (default: rollout.num_workers).")] = None,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Run the privileged scripted expert on Ray; successful episodes go to the lake as demos."""
    from tasks.rollouts import generate_demos

    _check_suite(suite)
    cfg, ws = setup(profile, config, set_, home)
    n = per_task or cfg.demos.per_task
    if n < 1:
        raise UserError("--per-task must be >= 1")
    summary = _run_with_progress("demos", generate_demos, cfg=cfg, ws=ws, suite=suite, per_task=n,
                                 task_ids=_parse_tasks(tasks) or cfg.sim.tasks, num_workers=workers)
    _print_summary(summary, f"Scripted expert success per task ({suite})")


@handle_errors
def rollout(
    policy: Annotated[str, typer.Option(help="expert | noisy-expert | random | PATH to a Cosmos Policy checkpoint | "
                                             "models:/NAME@ALIAS | models:/NAME/VERSION.")] = "random",
    suite: Annotated[str, typer.Option(help="Suite, e.g. libero_object or robocasa_fixture.")] = "libero_object",
    episodes: Annotated[int, typer.Option(help="Episodes per task.")] = 2,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated task ids (default: profile's sim.tasks, else all).")] = None,
    iteration: Annotated[int, typer.Option(help="Flywheel iteration the episodes belong to.")] = 0,
    planning: Annotated[bool, typer.Option(help="Best-of-N planning (model policies only).")] = False,
    planning_model: Annotated[str | None, typer.Option(
        help="With --planning: a separate model (folder or models:/ URI, e.g. the 90/10-refined one) whose world "
             "model and value judge the policy's candidates. Default: the policy judges its own.")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray env workers (default: rollout.num_workers).")] = None,
    heldout: Annotated[bool, typer.Option(help="Evaluation: start from the held-out init states "
                                               "(sim.heldout_init_states) and store episodes as source=eval, "
                                               "which training never selects.")] = False,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Roll a policy out on Ray; every episode (sparse terminal reward, value targets) is written to the lake.

    Model episodes record the model's version: NAME/vN for a registered model, sha-<digest> for a folder.
    """
    from tasks.registry import RegistryError, check_layout
    from tasks.rollouts import (
        BEHAVIOURS,
        check_object_state,
        resolve_checkpoint,
        run_model_rollouts,
        run_rollouts,
        system_label,
    )

    _check_suite(suite)
    if episodes < 1:
        raise UserError("--episodes must be >= 1")
    kind = policy.replace("-", "_")
    if kind in BEHAVIOURS and planning:
        raise UserError("--planning needs a model policy (a checkpoint folder or models:/ URI)")
    if planning_model and not planning:
        raise UserError("--planning-model judges candidates only when planning: add --planning")
    cfg, ws = setup(profile, config, set_, home)
    from storage_schemas import Source

    common = dict(cfg=cfg, ws=ws, suite=suite, episodes=episodes, task_ids=_parse_tasks(tasks) or cfg.sim.tasks,
                  iteration=iteration, num_workers=workers, split="heldout" if heldout else "train",
                  source=Source.EVAL if heldout else Source.ROLLOUT)
    if kind in BEHAVIOURS:
        summary = _run_with_progress("rollout", run_rollouts, policy=kind, **common)
        label = policy
    else:
        try:
            model = resolve_checkpoint(policy, cfg, ws)
        except RegistryError as exc:
            hint = "" if ":/" in policy else "expected expert, noisy-expert, random, a checkpoint folder or models:/...; "
            raise UserError(f"--policy: {hint}{exc}") from None
        check_object_state(check_layout(model.path, suite, chunk_size=cfg.model.chunk_size), cfg, suite)  # before Ray
        judge = None
        if planning_model:
            try:
                judge = resolve_checkpoint(planning_model, cfg, ws)
            except RegistryError as exc:
                raise UserError(f"--planning-model: {exc}") from None
            check_layout(judge.path, suite, chunk_size=cfg.model.chunk_size)
        summary = _run_with_progress("rollout", run_model_rollouts, checkpoint=model, planning=planning,
                                     planning_model=judge, **common)
        label = system_label(model, judge)
    _print_summary(summary, f"Rollouts of {label} on {suite} (iteration {iteration})")
