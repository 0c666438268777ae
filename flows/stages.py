"""One flow per stage that makes sense on its own: training (base or refine) and ad-hoc held-out evaluation.

The cycle (``flows/cycle.py``) chains the stages of one iteration; these run a single stage on demand, e.g. the
``evaluate`` deployment in ``prefect.yaml``. Data collection alone is ``flows/collect.py``.
"""

from __future__ import annotations

from prefect import flow

from tasks.evaluation import evaluate_model_task
from tasks.iteration import preflight
from tasks.runtime import load_workspace
from tasks.training import train_task


@flow(name="evaluate", log_prints=True)
def evaluate_flow(model: str = "models:/cosmos-policy@champion", profile: str = "cpu",
                  config_path: str | None = None, overrides: list[str] | None = None, home: str | None = None,
                  planning_model: str | None = None, modes: list[str] | None = None, iteration: int = 0) -> dict:
    cfg, ws = load_workspace(profile, config_path, overrides, home)
    preflight(cfg, ws)
    results = evaluate_model_task(cfg, ws, model, iteration=iteration, planning_model=planning_model, modes=modes)
    return {mode: {"successes": r.successes, "episodes": r.episodes, "ci95": r.interval} for mode, r in results.items()}


@flow(name="train", log_prints=True)
def train_flow(mix: str = "base", init: str | None = None, profile: str = "cpu", config_path: str | None = None,
               overrides: list[str] | None = None, home: str | None = None) -> dict:
    cfg, ws = load_workspace(profile, config_path, overrides, home)
    result = train_task(cfg, ws, preflight(cfg, ws), init=init, mix=mix, progress=False)
    return {"model_uri": result.model_uri, "run_id": result.run_id, "steps": result.steps}
