"""``fb results``: list, filter and show the runs of the result store."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT, DefaultGroup
from .render import print_json, print_table
from .sweep import store_option


@click.group(name="results", cls=DefaultGroup, context_settings=CONTEXT)
def results() -> None:
    """List the runs of the result store (`--json` for JSON), or show one.

    \b
    Examples:
      fb results
      fb results --method ties --suite tiny --json
      fb results show 3
      fb results show 3f2a9c --json
    """


@results.command(name="list", context_settings=CONTEXT)
@store_option
@click.option("--method", help="Only runs of this method.")
@click.option("--suite", help="Only runs whose model pool or task pool has this name.")
@click.option("--sweep", help="Only runs of this sweep.")
@click.option("--all", "all_kinds", is_flag=True, help="Include the reference runs (pretrained, individual).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_command(store_path: Path | None, method: str | None, suite: str | None, sweep: str | None,
                 all_kinds: bool, as_json: bool) -> None:
    """List stored runs, oldest first.

    \b
    Examples:
      fb results list --sweep lambda --json
      fb results list --all
    """
    from rich.table import Table

    from ..experiments.store import open_store
    from .render import fmt

    with open_store(store_path, readonly=True) as store:
        rows = store.runs(method=method, suite=suite, sweep=sweep, kind=None if all_kinds else "fused")
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} run{'s' if len(rows) != 1 else ''}")
    for column in ("id", "method", "hyperparameters", "model pool", "task pool", "seed", "validation", "test",
                   "wall s", "sweep", "key"):
        numeric = column in ("id", "seed", "validation", "test", "wall s")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        hps = ", ".join(f"{k}={v}" for k, v in row["hyperparameters"].items())
        table.add_row(str(row["id"]), row["method"], hps or "–", row["modelpool"]["name"], row["taskpool"]["name"],
                      str(row["seed"]), fmt(row["validation_accuracy"]), fmt(row["test_accuracy"]),
                      fmt(row["wall_s"]), row["sweep"] or "–", row["key"][:12])
    print_table(table)


@results.command(name="show", context_settings=CONTEXT)
@click.argument("run")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the stored run as JSON.")
def show_command(run: str, store_path: Path | None, as_json: bool) -> None:
    """Show one run (by id or cell-key prefix): its report and its metrics per split.

    \b
    Examples:
      fb results show 3
      fb results show 3f2a9c --json
    """
    from rich.table import Table

    from ..experiments.store import open_store
    from .render import fmt, print_mapping

    with open_store(store_path, readonly=True) as store:
        row = store.find(run)
        report = store.report(row["id"])
        metrics = store.metrics([row["id"]])[row["id"]]
        counts = {split: {t: len(p["predicted"]) for t, p in store.predictions(row["id"], split).items()}
                  for split in metrics}
    details = {**row, "metrics": metrics, "predictions": {s: c for s, c in counts.items() if c},
               "report": report}
    if as_json:
        print_json(details)
        return
    print_mapping(f"run {row['id']}", {k: v for k, v in row.items()})
    for split, tasks in metrics.items():
        names: list[str] = []
        for values in tasks.values():
            names += [m for m in values if m not in names]
        table = Table(title=f"{split} split")
        table.add_column("task")
        for name in names:
            table.add_column(name, justify="right")
        for task, values in tasks.items():
            table.add_row(task, *[fmt(values.get(n)) for n in names])
        print_table(table)
