"""``flywheel query`` and ``flywheel report``: SQL over the lake with DuckDB."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Annotated

import pyarrow as pa
import typer
from rich.table import Table as RichTable

from flywheel.cli.common import HomeOpt, UserError, console, handle_errors, setup


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def print_table(table: pa.Table, fmt: str = "table", title: str | None = None) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(table.to_pylist(), default=_json_default) + "\n")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf)
        sys.stdout.write(buf.getvalue().to_pybytes().decode())
    else:
        rt = RichTable(title=title, show_lines=False)
        for name in table.column_names:
            rt.add_column(name, overflow="fold")
        for row in table.to_pylist():
            rt.add_row(*("" if v is None else (v.hex()[:16] + "…" if isinstance(v, bytes) else str(v)) for v in row.values()))
        console.print(rt)
        if table.num_rows == 0:
            console.print("[dim](no rows)[/]")


FORMATS = ("table", "csv", "json")
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json")]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format must be table, csv or json (got {fmt!r})")


@handle_errors
def query(
    sql: Annotated[str, typer.Argument(help="Any SQL over the views episodes, steps, evaluations.")],
    fmt: FormatOpt = "table",
    home: HomeOpt = None,
) -> None:
    """Run SQL over the lake's DuckDB views and print the result."""
    import duckdb

    from storage_schemas.views import connect

    _check_format(fmt)
    _, ws = setup(home=home)
    con = connect(ws.lake)
    try:
        result = con.sql(sql)
    except duckdb.Error as exc:
        raise UserError(f"SQL failed: {str(exc).splitlines()[0]}") from None
    if result is None:
        raise UserError("the statement returned no result set")
    print_table(result.to_arrow_table(), fmt)


@handle_errors
def report(
    fmt: FormatOpt = "table",
    home: HomeOpt = None,
) -> None:
    """Canned reports: success by suite x task x iteration x planning (Wilson 95% CI); length by outcome."""
    from storage_schemas.views import connect, run_reports

    _check_format(fmt)
    _, ws = setup(home=home)
    for rep, table in run_reports(connect(ws.lake)):
        if fmt == "table":
            print_table(table, fmt, title=rep.title)
        else:
            sys.stdout.write(f"# {rep.title}\n")
            print_table(table, fmt)
