"""Everything ``fb`` prints: JSON on stdout, rich tables on stdout, messages on stderr."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def stdout_console() -> Console:
    """A console for data on stdout (no colour when piped; wide when piped, so tables are not cut)."""
    width = int(os.environ.get("COLUMNS", "0")) or (None if sys.stdout.isatty() else 160)
    return Console(file=sys.stdout, soft_wrap=False, width=width)


def print_table(table: Table) -> None:
    """Print ``table`` on stdout without ever cutting a word: a table when every word fits a column at the
    console's width (longer text wraps between words), else a list of records, one ``column: value``
    line each, so a method name or a key prefix one must type is always whole."""
    from rich.measure import Measurement

    console = stdout_console()
    for column in table.columns:
        column.overflow = "fold"  # never "…"; with the check below it only folds what has no space anyway
    unbounded = console.options.update(width=1 << 20, max_width=1 << 20)  # else the measure is capped at the width
    if Measurement.get(console, unbounded, table).minimum <= console.width:
        console.print(table)
        return
    columns = [(str(column.header), [_plain(cell) for cell in column.cells]) for column in table.columns]
    lines = [_plain(table.title)] if table.title else []
    for index in range(table.row_count):
        lines.append("")
        lines += [f"{header}: {cells[index]}" for header, cells in columns if index < len(cells)]
    if table.caption:
        lines += ["", _plain(table.caption)]
    click.echo("\n".join(lines))


def _plain(value: Any) -> str:
    return value.plain if hasattr(value, "plain") else str(value)


def stderr_console() -> Console:
    """A console for progress and messages on stderr."""
    return Console(file=sys.stderr, stderr=True)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def fmt(value: Any) -> str:
    """A table cell: floats to 4 places, ``–`` for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_mapping(title: str, data: dict[str, Any]) -> None:
    """A two-column key/value table (values that are not text shown as JSON)."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)
    print_table(table)


def print_report(report: dict[str, Any]) -> None:
    """Render a report as a table: tasks as rows, metrics as columns, the average last."""
    metrics: list[str] = []
    for values in report["tasks"].values():
        for metric in values:
            if metric not in metrics:
                metrics.append(metric)
    hp = ", ".join(f"{k}={v}" for k, v in report.get("hyperparameters", {}).items())
    table = Table(title=f"{report['method']} on {report['taskpool']['name']}", caption=hp or None)
    table.add_column("task")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for task, values in report["tasks"].items():
        table.add_row(task, *[fmt(values.get(metric)) for metric in metrics])
    table.add_section()
    table.add_row("average", *[fmt(report["average"].get(metric)) for metric in metrics], style="bold")
    for group, values in (report.get("groups") or {}).items():
        table.add_row(f"average: {group} ({len(values['tasks'])})",
                      *[fmt(values["average"].get(metric)) for metric in metrics], style="bold")
    print_table(table)
    cost = report.get("cost", {})
    if cost:
        stdout_console().print("cost: " + ", ".join(f"{k}={v}" for k, v in cost.items()))


def print_listing(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """A listing table; list values show as ``count: a, b, …``."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, style="bold" if index == 0 else None)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, list):
                value = f"{len(value)}: " + ", ".join(map(str, value))
            cells.append(str(value))
        table.add_row(*cells)
    print_table(table)


def print_parameters(title: str, rows: list[dict[str, Any]]) -> None:
    """Hyperparameters or options: name, type, default, what is allowed (range or choices), help."""
    table = Table(title=title)
    for column in ("name", "type", "default", "allowed", "help"):
        table.add_column(column)
    for row in rows:
        allowed = row.get("range") or (", ".join(map(str, row["choices"])) if row.get("choices") else "")
        table.add_row(row["name"], row["type"], json.dumps(row["default"]), allowed, row["help"])
    print_table(table)


def print_plugins(rows: list[dict[str, Any]]) -> None:
    """``fb plugins``: one row per plugin, failures and name conflicts in red."""
    table = Table(title=f"{len(rows)} plugins")
    for column in ("name", "distribution", "version", "status", "hooks"):
        table.add_column(column)
    for row in rows:
        status = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
        if row.get("conflicts"):
            status += "; conflict: " + "; ".join(row["conflicts"])
        style = "red" if row["error"] or row.get("conflicts") else None
        table.add_row(row["name"], row["distribution"], row["version"], status, ", ".join(row["hooks"]), style=style)
    print_table(table)


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")


def plain_doc(text: str) -> str:
    """A docstring without reST markup: ``:class:`~a.b.C``` becomes ``C``, double backquotes go."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        return target.rsplit(".", 1)[-1] if match.group(0).count("~") else target

    return _ROLE.sub(role, text).replace("``", "")
