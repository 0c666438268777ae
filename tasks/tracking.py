"""MLflow runs of the flywheel's stages: find-or-create by a content key, datasets, tags, end states.

A stage run is identified by a key over its inputs (tag ``flywheel.key``). Starting the same stage again finds the
run: a FINISHED run means the work is done; a RUNNING (its driver was killed) or FAILED run is reopened and
continues, so one training keeps one run across crashes. Any exception inside :func:`stage_run` ends the run as
FAILED, never left RUNNING.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KEY_TAG = "flywheel.key"
REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The repository's commit (``+dirty`` when the tree has changes), or ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_run(experiment_id: str, key: str) -> Any | None:
    """The newest run of ``experiment_id`` tagged with ``key``, or None."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


@contextmanager
def stage_run(experiment_id: str, key: str, run_name: str, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> Iterator[tuple[Any, bool]]:
    """Open (or reopen) the run for ``key``; yields ``(run, reopened)``. Ends FINISHED on success, FAILED on error.

    The caller checks for a FINISHED run with :func:`find_run` first when a finished stage should be skipped.
    """
    import mlflow

    previous = find_run(experiment_id, key)
    reopened = previous is not None and previous.info.status != "FINISHED"
    all_tags = {KEY_TAG: key, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    nested = mlflow.active_run() is not None
    if reopened:
        run = mlflow.start_run(run_id=previous.info.run_id, nested=nested)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags, nested=nested)
    try:
        yield run, reopened
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def log_params_once(run: Any, params: Mapping[str, str]) -> None:
    """Log params not yet on the run (a reopened run already has them; re-logging another value would raise)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    have = MlflowClient().get_run(run.info.run_id).data.params
    new = {k: v for k, v in params.items() if k not in have}
    items = list(new.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i:i + 100]))


def log_episode_dataset(table: Any, source: str, name: str, digest: str, context: str = "training",
                        tags: Mapping[str, str] | None = None) -> None:
    """Log an episode selection (a pyarrow table of episode rows) as an MLflow dataset input."""
    import mlflow
    import mlflow.data

    dataset = mlflow.data.from_pandas(table.to_pandas(), source=source, name=name, digest=digest)
    mlflow.log_input(dataset, context=context, tags={k: str(v) for k, v in (tags or {}).items()} or None)
