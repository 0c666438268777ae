"""The nightly cycle: demos → fine-tune → rollouts → 90/10 refine → held-out evaluation → promotion → report.

Each step is a Prefect task (``tasks/cycle.py``) with persisted, input-keyed results: re-running a crashed cycle
reopens the same iteration and skips the stages that finished.
"""

from __future__ import annotations

from prefect import flow, task

from tasks.cycle import stage_tasks
from tasks.cycle_report import report_task
from tasks.iteration import begin_iteration, end_iteration, preflight
from tasks.runtime import load_workspace

preflight_task = task(preflight, name="preflight", persist_result=False)
begin_task = task(begin_iteration, name="begin-iteration", persist_result=False)


@flow(name="cycle", log_prints=True)
def cycle_flow(profile: str = "cpu", config_path: str | None = None, overrides: list[str] | None = None,
               home: str | None = None) -> dict:
    cfg, ws = load_workspace(profile, config_path, overrides, home)
    preflight_task(cfg, ws)
    it = begin_task(cfg, ws)
    t = stage_tasks(ws)
    try:
        demos = t.demos(cfg, ws, it)
        base = t.finetune(cfg, ws, it, demos)
        rollouts = t.rollouts(cfg, ws, it, base)
        candidate = t.refine(cfg, ws, it, base, rollouts)
        evaluation = t.evaluate(cfg, ws, it, base, candidate)
        promotion = t.promote(cfg, ws, it, base, candidate, evaluation)
        return report_task(cfg, ws, it, demos, base, rollouts, candidate, evaluation, promotion)
    except BaseException:
        end_iteration(cfg, ws, it, failed=True)
        raise
