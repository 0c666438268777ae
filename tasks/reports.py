"""Report tasks: canned DuckDB reports over the lake."""

from __future__ import annotations

from prefect import task

from flywheel.workspace import Workspace
from storage_schemas.views import connect, run_reports


def lake_report(ws: Workspace) -> dict[str, list[dict]]:
    """Run every canned report; returns title -> rows."""
    return {rep.title: table.to_pylist() for rep, table in run_reports(connect(ws.lake))}


report_task = task(lake_report, name="lake-report", persist_result=False)
