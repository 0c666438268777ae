"""The end of an iteration: metrics on the parent run (what the MLflow UI compares across iterations), plots as
artifacts, a Prefect markdown artifact, and the summary the CLI and the benchmark print."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from flywheel.config import FlywheelConfig
from flywheel.workspace import Workspace
from storage_schemas.stats import wilson_interval
from tasks.cycle import DemoResult, EvalResult, ModelRef, PromoteResult, RolloutResult
from tasks.iteration import Iteration, cycle_runs, end_iteration


def _finite(x: float) -> bool:
    return x is not None and not math.isnan(x)


def iteration_metrics(evaluation: EvalResult, seconds: dict[str, float]) -> dict[str, float]:
    """Parent-run metrics: the candidate's held-out numbers, the base model's for comparison, stage durations."""
    out: dict[str, float] = {}
    for role, prefix in (("candidate", ""), ("base", "_base"), ("champion", "_champion")):
        if role not in evaluation.closed_loop:
            continue
        for mode, r in evaluation.closed_loop[role].items():
            suffix = "" if mode == "direct" else "_planning"
            out[f"eval/success_rate{suffix}{prefix}"] = r.rate
            if role == "candidate":
                for task_id, (n, k) in sorted(r.per_task.items()):
                    out[f"eval/task_{task_id}/success_rate{suffix}"] = k / n if n else 0.0
        s = evaluation.offline[role]
        for name, v in (("value/auc", s.value_auc), ("wm/mse", s.wm_mse), ("wm/mse_failures", s.wm_mse_failures),
                        ("policy/action_l1", s.action_l1)):
            if _finite(v):
                out[f"{name}{prefix}"] = v
    for stage, sec in seconds.items():
        out[f"duration/{stage}_s"] = sec
    out["duration/total_s"] = sum(seconds.values())
    return out


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plots(cfg: FlywheelConfig, ws: Workspace, it: Iteration, evaluation: EvalResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    # 1. success per task, every evaluated model and mode, Wilson 95% intervals
    fig, ax = plt.subplots(figsize=(7, 3.5))
    series = [(role, mode, r) for role, modes in evaluation.closed_loop.items() for mode, r in modes.items()]
    tasks = sorted({t for _, _, r in series for t in r.per_task})
    width = 0.8 / max(len(series), 1)
    for i, (role, mode, r) in enumerate(series):
        rates, lo, hi = [], [], []
        for t in tasks:
            n, k = r.per_task.get(t, (0, 0))
            a, b = wilson_interval(k, n)
            rates.append(k / n if n else 0.0)
            lo.append(rates[-1] - a)
            hi.append(b - rates[-1])
        ax.bar(np.arange(len(tasks)) + i * width, rates, width, yerr=[lo, hi], capsize=2, label=f"{role} {mode}")
    ax.set_xticks(np.arange(len(tasks)) + width * (len(series) - 1) / 2, [f"task {t}" for t in tasks])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out success")
    ax.set_title(f"iteration {it.number}: success per task (Wilson 95%)")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out / "success_per_task.png"))
    # 2. value calibration (reliability): predicted value vs observed success, base vs candidate
    fig, ax = plt.subplots(figsize=(4, 4))
    bins = np.linspace(0, 1, 6)
    for role in ("base", "candidate"):
        cal = evaluation.offline[role].calibration
        if not cal:
            continue
        v = np.array([c[0] for c in cal])
        y = np.array([c[1] for c in cal], dtype=float)
        idx = np.clip(np.digitize(v, bins) - 1, 0, len(bins) - 2)
        xs = [(v[idx == b].mean(), y[idx == b].mean()) for b in range(len(bins) - 1) if (idx == b).any()]
        ax.plot([x for x, _ in xs], [y_ for _, y_ in xs], "o-", label=f"{role} (AUC {evaluation.offline[role].value_auc:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("predicted value")
    ax.set_ylabel("observed success")
    ax.set_title("value calibration (held-out)")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out / "value_calibration.png"))
    # 3. success by iteration (direct vs planning) from the parent runs of every iteration so far
    runs = sorted(cycle_runs(cfg, ws, it.experiment_id), key=lambda r: int(r.data.tags["flywheel.iteration"]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("eval/success_rate", "direct"), ("eval/success_rate_planning", "planning")):
        pts = [(int(r.data.tags["flywheel.iteration"]), r.data.metrics[key]) for r in runs if key in r.data.metrics]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("candidate held-out success")
    ax.set_ylim(0, 1.05)
    ax.set_title("planning vs direct by iteration")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out / "success_by_iteration.png"))
    return paths


def _markdown(it: Iteration, summary: dict[str, Any], run_url: str) -> str:
    m = summary["metrics"]
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in sorted(m.items()) if not k.startswith("duration"))
    times = ", ".join(f"{k.split('/')[1][:-2]} {v:.0f}s" for k, v in sorted(m.items()) if k.startswith("duration"))
    return (f"# Flywheel iteration {it.number}\n\n"
            f"- MLflow parent run: [{it.parent_run_id}]({run_url})\n"
            f"- start model: `{summary['base']}`; candidate: `{summary['candidate']}`\n"
            f"- decision: **{summary['decision']}** (champion now `{summary['champion']}`"
            f"{', planner `' + summary['champion_planner'] + '`' if summary.get('champion_planner') else ''})\n"
            f"- stage times: {times}\n\n| metric | value |\n|---|---|\n{rows}\n")


def report_stage(cfg: FlywheelConfig, ws: Workspace, it: Iteration, demos: DemoResult, base: ModelRef,
                 rollouts: RolloutResult, candidate: ModelRef, evaluation: EvalResult,
                 promotion: PromoteResult) -> dict[str, Any]:
    """Log the iteration's metrics, plots and decision on its parent run, publish the Prefect summary, and mark
    the iteration finished. Returns the summary (JSON-serialisable)."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from tasks.runtime import mlflow_uri

    uri = mlflow_uri(cfg, ws)
    client = MlflowClient(uri, registry_uri=uri)
    seconds = {"demos": demos.seconds, "finetune": base.seconds, "rollouts": rollouts.seconds,
               "refine": candidate.seconds, "evaluate": evaluation.seconds, "promote": promotion.seconds}
    metrics = iteration_metrics(evaluation, seconds)
    metrics["promote/p_value"] = promotion.decision.p_value
    now = int(__import__("time").time() * 1000)
    client.log_batch(it.parent_run_id, metrics=[Metric(k, float(v), now, it.number) for k, v in metrics.items()],
                     tags=[RunTag(k, str(v)) for k, v in {
                         "flywheel.demo_digest": demos.digest, "flywheel.base_model": base.uri,
                         "flywheel.candidate": candidate.uri, "flywheel.champion": promotion.champion,
                         "flywheel.champion_planner": promotion.champion_planner or "",
                         "flywheel.decision": promotion.decision.reason,
                         "flywheel.promoted": str(promotion.decision.promote).lower()}.items()])
    with tempfile.TemporaryDirectory() as tmp:
        for path in _plots(cfg, ws, it, evaluation, Path(tmp)):
            client.log_artifact(it.parent_run_id, str(path), "plots")
    summary = {"iteration": it.number, "parent_run_id": it.parent_run_id, "base": base.uri,
               "candidate": candidate.uri, "champion": promotion.champion,
               "champion_planner": promotion.champion_planner, "promoted": promotion.decision.promote,
               "systems": evaluation.labels,
               "decision": promotion.decision.reason, "p_value": promotion.decision.p_value,
               "rollouts": {"model": [rollouts.model_successes, rollouts.model_episodes],
                            "noisy_expert": [rollouts.expert_successes, rollouts.expert_episodes]},
               "heldout_episodes": evaluation.heldout_episodes, "metrics": metrics,
               "train_steps": {"base": base.steps, "candidate": candidate.steps}, "tracking_uri": uri}
    _publish(it, summary, uri)
    end_iteration(cfg, ws, it)
    return summary


def _publish(it: Iteration, summary: dict[str, Any], tracking_uri: str) -> None:
    """A Prefect markdown artifact (inside a flow run only) linking to the MLflow run."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    base = tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    url = f"{base}/#/experiments/{it.experiment_id}/runs/{it.parent_run_id}"
    create_markdown_artifact(_markdown(it, summary, url), key=f"flywheel-iteration-{it.number}",
                             description=f"Flywheel iteration {it.number}")


report_task = task(report_stage, name="report", persist_result=False)
