"""``flywheel cycle`` (run iterations now) and ``flywheel serve`` (run them nightly on this machine)."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import typer

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup

EXAMPLE_QUERIES = (
    ("success rate by task and iteration (held-out, with Wilson intervals)",
     "SELECT iteration, task_id, planning, policy_version, inference, n_success, n_episodes, round(ci_low, 2) AS lo, "
     "round(ci_high, 2) AS hi FROM evaluations ORDER BY iteration, task_id, planning, inference"),
    ("which tasks regressed? (each model version vs the previous one, same held-out init states)",
     "SELECT task_id, planning, policy_version, success_rate, success_rate - lag(success_rate) OVER (PARTITION BY "
     "task_id, planning ORDER BY try_cast(regexp_extract(policy_version, '/v([0-9]+)$', 1) AS INT)) AS change "
     "FROM evaluations ORDER BY change NULLS LAST LIMIT 5"),
    ("how long are failed episodes? (rollouts per policy)",
     "SELECT policy, success, count(*) AS episodes, avg(length) AS mean_length FROM episodes "
     "WHERE source = 'rollout' GROUP BY ALL ORDER BY ALL"),
)


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def print_summary(summary: dict[str, Any], home: str) -> None:
    m = summary["metrics"]
    console.print(f"\n[bold]Iteration {summary['iteration']}[/]  (MLflow parent run {summary['parent_run_id']})",
                  highlight=False)
    console.print(f"  start model {summary['base']} → refined candidate {summary['candidate']}", highlight=False)
    for label, key in (("held-out success, direct", "eval/success_rate"),
                       ("held-out success, planning", "eval/success_rate_planning"),
                       ("value AUC", "value/auc"), ("world-model MSE", "wm/mse")):
        console.print(f"  {label:28s} candidate {_fmt(m.get(key))}   base {_fmt(m.get(key + '_base'))}",
                      highlight=False)
    console.print(f"  decision: {summary['decision']}; champion = {summary['champion']}", highlight=False)
    console.print(f"  took {m.get('duration/total_s', 0):.0f}s", highlight=False)


def print_where_to_look(home: str, tracking_uri: str) -> None:
    console.print("\n[bold]Where to look[/]")
    if tracking_uri.startswith("sqlite:"):
        console.print(f"  MLflow UI:  mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"  MLflow UI:  {tracking_uri}", highlight=False)
    console.print("  DuckDB over the lake (flywheel query \"SQL\" --home ...):")
    for title, sql in EXAMPLE_QUERIES:
        console.print(f"    # {title}\n    flywheel query --home {home} \"{sql}\"", highlight=False, soft_wrap=True)


@handle_errors
def cycle(
    iterations: Annotated[int, typer.Option(help="Cycles to run one after another.")] = 1,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """One flywheel iteration (Prefect flow): demos → fine-tune → rollouts → 90/10 refine → held-out evaluation
    with planning → promotion, every stage a child run of the iteration's MLflow run. A crashed cycle resumes."""
    if iterations < 1:
        raise UserError("--iterations must be >= 1")
    cfg, ws = setup(profile, config, set_, home)  # before Prefect is imported: it reads its settings once
    from flows.cycle import cycle_flow
    from tasks.iteration import preflight
    from tasks.runtime import mlflow_uri

    preflight(cfg, ws)  # bad input fails here, before Prefect starts
    for _ in range(iterations):
        t0 = time.perf_counter()
        summary = cycle_flow(profile=profile, config_path=str(config) if config else None,
                             overrides=list(set_ or []), home=str(ws.home))
        print_summary(summary, str(ws.home))
        console.print(f"  wall {time.perf_counter() - t0:.0f}s", highlight=False)
    print_where_to_look(str(ws.home), mlflow_uri(cfg, ws))


@handle_errors
def serve(
    cron: Annotated[str | None, typer.Option(help="Cron schedule (default cycle.cron).")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone (default cycle.timezone).")] = None,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Serve the cycle on this machine on a cron schedule (Prefect ``flow.serve``; stop with Ctrl-C / SIGTERM).
    Needs a Prefect server (``prefect server start``; PREFECT_API_URL) to schedule against."""
    cfg, ws = setup(profile, config, set_, home)  # before Prefect is imported: it reads its settings once
    from prefect.schedules import Cron

    from flows.cycle import cycle_flow
    from tasks.iteration import preflight

    preflight(cfg, ws)
    schedule = Cron(cron or cfg.cycle.cron, timezone=timezone or cfg.cycle.timezone)
    console.print(f"serving the cycle ({profile}) on '{schedule.cron}' ({schedule.timezone}); workspace {ws.home}",
                  highlight=False)
    cycle_flow.serve(name="nightly", schedules=[schedule],
                     parameters={"profile": profile, "config_path": str(config) if config else None,
                                 "overrides": list(set_ or []), "home": str(ws.home)})
