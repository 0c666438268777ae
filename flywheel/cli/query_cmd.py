"""``flywheel query`` and ``flywheel report``: SQL over the lake with DuckDB."""

from __future__ import annotations

import base64
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer
from rich.table import Table as RichTable

from flywheel.cli.common import HomeOpt, UserError, console, handle_errors, setup


def _jsonable(value: object) -> object:
    """A Python value from Arrow → JSON-ready: bytes as base64, maps as objects, decimals as numbers."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):  # an Arrow map
            return {str(k): _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _text_columns(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs, maps) as JSON text and binary as base64, so CSV can hold every column."""
    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            col = pa.array([None if v is None else (json.dumps(_jsonable(v)) if pa.types.is_nested(t)
                                                     else _jsonable(v)) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def print_table(table: pa.Table, fmt: str = "table", title: str | None = None, out: Path | None = None) -> None:
    """Print (or, with ``out``, write) a result: table, csv (nested columns as JSON text), json, parquet."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if out is None:
            raise UserError("--format parquet needs --out FILE.parquet")
        pq.write_table(table, out)
        console.print(f"{table.num_rows} rows written to {out}")
        return
    if fmt == "json":
        text = json.dumps([_jsonable(r) for r in table.to_pylist()]) + "\n"
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        buf = pa.BufferOutputStream()
        pacsv.write_csv(_text_columns(table), buf)
        text = buf.getvalue().to_pybytes().decode()
    else:
        rt = RichTable(title=title, show_lines=False)
        for name in table.column_names:
            rt.add_column(name, overflow="fold")
        for row in table.to_pylist():
            rt.add_row(*("" if v is None else (v.hex()[:16] + "…" if isinstance(v, bytes) else str(v)) for v in row.values()))
        console.print(rt)
        if table.num_rows == 0:
            console.print("[dim](no rows)[/]")
        return
    if out is not None:
        out.write_text(text)
    else:
        sys.stdout.write(text)


FORMATS = ("table", "csv", "json", "parquet")
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json | parquet (parquet needs --out)")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write the result to this file instead of stdout.")]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format must be table, csv, json or parquet (got {fmt!r})")


@handle_errors
def query(
    sql: Annotated[str, typer.Argument(help="Any SQL over the views episodes, steps, evaluations.")],
    fmt: FormatOpt = "table",
    out: OutOpt = None,
    home: HomeOpt = None,
) -> None:
    """Run SQL over the lake's DuckDB views and print the result (lists and maps as JSON text in CSV, binary
    columns such as images as base64)."""
    import duckdb

    from storage_schemas.views import connect

    _check_format(fmt)
    if fmt == "parquet" and out is None:
        raise UserError("--format parquet needs --out FILE.parquet")
    _, ws = setup(home=home)
    con = connect(ws.lake)
    try:
        result = con.sql(sql)
    except duckdb.Error as exc:
        raise UserError(f"SQL failed: {str(exc).splitlines()[0]}") from None
    if result is None:
        raise UserError("the statement returned no result set")
    print_table(result.to_arrow_table(), fmt, out=out)


@handle_errors
def report(
    fmt: FormatOpt = "table",
    home: HomeOpt = None,
) -> None:
    """Canned reports: success by suite x task x iteration x planning (Wilson 95% CI); length by outcome."""
    from storage_schemas.views import connect, run_reports

    _check_format(fmt)
    if fmt == "parquet":
        raise UserError("report prints tables: use --format table, csv or json")
    _, ws = setup(home=home)
    for rep, table in run_reports(connect(ws.lake)):
        if fmt == "table":
            print_table(table, fmt, title=rep.title)
        else:
            sys.stdout.write(f"# {rep.title}\n")
            print_table(table, fmt)
