"""``fb sweep``: run a sweep file's cells (methods × grids × seeds × suites) into the result store."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json, print_table

STORE_HELP = "Result store (SQLite file). Default: $FUSIONBENCH_STORE, else $FUSIONBENCH_CACHE/results.sqlite3."


def store_option(func):
    """The ``--store PATH`` option shared by the experiment commands."""
    return click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path),
                        help=STORE_HELP)(func)


def leaderboard_options(func):
    """``--select-on``, ``--suite`` and ``--sweep``: which runs a leaderboard (table, plots, report) is made of."""
    func = click.option("--sweep", help="Only runs of this sweep.")(func)
    func = click.option("--suite", help="Only this suite (model pool or task pool name).")(func)
    return click.option("--select-on", type=click.Choice(["validation", "test"]), default="validation",
                        show_default=True, help="Split on which each method's hyperparameters are chosen (test: oracle).")(func)


@click.command(name="sweep", context_settings=CONTEXT)
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@click.option("--select-on", type=click.Choice(["validation", "test"]),
              help="Score cells on the validation split too, to select hyperparameters on it (default: the file's "
                   "select_on, else validation).")
@click.option("--executor", default="serial", show_default=True, metavar="serial|ray",
              help="Where cells run: serially in this process, or as Ray tasks (pip install 'fusionbench-core[ray]'); "
                   "either way this process alone writes the store.")
@click.option("--address", help="Ray: the cluster to run on (default: start a local Ray instance).")
@click.option("--num-cpus", type=int, help="Ray: CPUs of the local instance (default: all).")
@click.option("--gpus-per-cell", type=float,
              help="Ray: GPUs each cell asks for (default: 1 where the cluster has GPUs and the cell's method or "
                   "pools want one, else 0).")
@click.option("--no-reuse", is_flag=True,
              help="Run every cell on its own, even the λ values of a λ-linear method (task arithmetic, TIES, "
                   "TSV-M; by default a λ sweep loads the pools and computes the task vector once).")
@click.option("-k", "--keep-going", is_flag=True,
              help="A cell that fails is listed as failed with its error (nothing stored: a rerun retries it) "
                   "and the sweep goes on; the exit status is 1 if any failed.")
@click.option("--dry-run", is_flag=True,
              help="List the cells and which are stored; run no cell (planning builds the pools, so a suite that "
                   "trains its own experts builds what is missing).")
@click.option("--json", "as_json", is_flag=True, help="Print the cells as a JSON list.")
def sweep_command(spec_file: Path, store_path: Path | None, select_on: str | None, executor: str,
                  address: str | None, num_cpus: int | None, gpus_per_cell: float | None, no_reuse: bool,
                  keep_going: bool, dry_run: bool, as_json: bool) -> None:
    """Run every cell of a sweep file that the result store lacks; an interrupted sweep resumes.

    Each cell (a method, one point of its hyperparameter grid, a suite, a seed) runs through the
    `fb run` program and is recorded in one transaction once complete; its key hashes the
    configuration, the pools' fingerprints and the code version, so a cell already stored is skipped.

    \b
    Examples:
      fb sweep lambda.yaml
      fb sweep lambda.yaml --store runs.sqlite3 --json
      fb sweep lambda.yaml --dry-run
      fb sweep every-method.yaml --keep-going
      fb sweep lambda.yaml --executor ray --num-cpus 2
      fb sweep lambda.yaml --executor ray --address ray://head:10001
    """
    from ..experiments.executors import get_executor
    from ..experiments.store import check_store_path, open_store, store_path_from_env
    from ..experiments.sweep import load_spec, plan_cells, run_sweep
    from ..plugins import get_host

    if not spec_file.exists():
        raise click.BadParameter(f"file '{spec_file}' does not exist", param_hint="SPEC_FILE")
    ray_options = {"address": address, "num_cpus": num_cpus, "gpus_per_cell": gpus_per_cell}
    get_executor(executor, **ray_options)  # an unknown executor or a missing Ray fails before anything runs
    check_store_path(store_path_from_env(store_path))
    spec = load_spec(spec_file, select_on=select_on)
    # Every cell is checked (and keyed) before the store is opened: a bad sweep file leaves no store behind.
    planned = plan_cells(spec, get_host())
    path = store_path_from_env(store_path)
    if dry_run and not path.exists():  # a plan needs no store: nothing is stored yet, and none is created
        result = run_sweep(spec, NoStore(path), dry_run=True, executor=executor, planned=planned, **ray_options)
    else:
        with open_store(store_path) as store:
            result = run_sweep(spec, store, dry_run=dry_run, executor=executor, reuse=not no_reuse,
                               keep_going=keep_going, planned=planned, **ray_options)
    counts = result.counts()
    if as_json:
        print_json(result.rows)
    else:
        print_cells(result.rows, title=f"sweep {spec.name} ({'plan' if dry_run else 'cells'})")
    failed = [row for row in result.rows if row["status"] == "failed"]
    summary = (f"{counts['done']} run, {counts['stored']} already stored, {counts['left']} left"
               + (f", {len(failed)} failed" if failed else "") + f" (store: {path})")
    if result.interrupted:
        click.echo(f"interrupted: {summary}; run the same command to resume", err=True)
        raise SystemExit(130)
    click.echo(summary, err=True)
    if failed:
        for row in failed:
            hps = ", ".join(f"{k}={v}" for k, v in (row.get("hyperparameters") or {}).items())
            seed = f" seed={row['seed']}" if row.get("seed") is not None else ""
            click.echo(f"failed: {row['method']}" + (f" ({hps})" if hps else "")
                       + f" on {row['suite']}{seed}: {row['error']}", err=True)
        raise SystemExit(1)


class NoStore:
    """The store a dry run plans against when none exists yet: it holds nothing."""

    def __init__(self, path: Path):
        self.path = path

    def keys(self) -> set[str]:
        """No cell is stored."""
        return set()


def print_cells(rows: list[dict], title: str) -> None:
    """A table of sweep cells with their status and accuracies."""
    from rich.table import Table

    from .render import fmt

    table = Table(title=title)
    for column in ("method", "hyperparameters", "suite", "seed", "status", "validation", "test", "key"):
        table.add_column(column, justify="right" if column in ("seed", "validation", "test") else "left")
    for row in rows:
        hps = ", ".join(f"{k}={v}" for k, v in (row.get("hyperparameters") or {}).items())
        table.add_row(row["method"], hps or "–", row["suite"], fmt(row.get("seed")), row["status"],
                      fmt(row.get("validation_accuracy")), fmt(row.get("test_accuracy", row.get("average"))),
                      row["key"][:12])
    print_table(table)
