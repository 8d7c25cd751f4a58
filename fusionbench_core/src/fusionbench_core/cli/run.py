"""``fb run``: fuse a model pool with a method and evaluate the result on a task pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .groups import CONTEXT
from .render import print_json, print_mapping, print_report, stderr_console


@click.command(name="run", context_settings=CONTEXT)
@click.argument("run_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-m", "--method", help="Fusion method (see `fb methods`). Default: task_arithmetic.")
@click.option("-p", "--modelpool", help="Model pool (see `fb modelpools`). Default: mini-vision.")
@click.option("-t", "--taskpool", help="Task pool (see `fb taskpools`). Default: the model pool's name.")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A method hyperparameter; `modelpool.KEY=VALUE` / `taskpool.KEY=VALUE` set pool options.")
@click.option("--seed", type=int, help="Seed for every random draw. Default: 0.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory for report.json (default: fb-runs/<method>-<pool>-<time>).")
@click.option("--save-model", is_flag=True, default=None, help="Also save the fused model in the run directory.")
@click.option("--overwrite", is_flag=True,
              help="Let --save-model replace fb's files in an existing, non-empty model directory.")
@click.option("--dry-run", is_flag=True,
              help="Build the method and check every option and range, print the plan, load no model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Result store to record the run in (as `fb sweep --store`). Default: $FUSIONBENCH_STORE, else "
                   "$FUSIONBENCH_CACHE/results.sqlite3.")
@click.option("--no-store", is_flag=True, help="Do not record the run in the result store (`fb results`).")
def run_command(run_file: Path | None, method: str | None, modelpool: str | None, taskpool: str | None,
                settings: tuple[str, ...], seed: int | None, output: Path | None, save_model: bool | None,
                overwrite: bool, dry_run: bool, as_json: bool, store_path: Path | None, no_store: bool) -> None:
    """Fuse a model pool with a method and evaluate the result on a task pool.

    \b
    Examples:
      fb run
      fb run -m ties -s scaling_factor=0.4 -s density=0.2
      fb run -m simple_average -p mini-text --json
      fb run -p tiny -s modelpool.n_models=2 -s taskpool.n_models=2 --dry-run
      fb run experiment.yaml -o runs/ties --save-model --overwrite
      fb run -m ties --store runs.sqlite3          # recorded there; `fb results --store runs.sqlite3`

    The run is recorded in the result store (its report, metrics and per-example predictions),
    keyed like a cell of `fb sweep` with `select_on: test`; `--no-store` leaves the store alone.
    """
    from ..config import build_run_config
    from ..run import execute, plan

    if run_file is not None and not run_file.exists():
        raise click.BadParameter(f"file '{run_file}' does not exist", param_hint="RUN_FILE")
    config = build_run_config(run_file, method=method, modelpool=modelpool, taskpool=taskpool,
                              settings=settings, seed=seed, output=output, save_model=save_model,
                              overwrite=overwrite)
    if dry_run:
        planned = plan(config)
        if as_json:
            print_json(planned)
        else:
            print_mapping("Plan (dry run)", planned)
        return
    if no_store and store_path is not None:
        raise click.UsageError("--store and --no-store contradict each other")
    store = None
    if not no_store:
        from ..experiments.store import ResultStore

        store = ResultStore(store_path)  # a bad store fails here, before anything runs
    try:
        report = execute(config, predictions=store is not None)
        if store is not None:
            record_run(store, config, report)
    finally:
        if store is not None:
            store.close()
    report.pop("predictions", None)
    if as_json:
        print_json(report)
    else:
        print_report(report)
        stderr_console().print(f"[dim]report: {report.get('output', '')}/report.json[/dim]")


def record_run(store: Any, config: Any, report: dict[str, Any]) -> None:
    """Record an ``fb run`` report in the result store under its cell key; say so (or that it was stored) on stderr."""
    from ..experiments.sweep import run_key
    from ..plugins import get_host

    key, payload = run_key(config, get_host())
    run_id = store.add(key, {**report, "cell": {"key": key, **payload}}, sweep=None)
    console = stderr_console()
    if run_id is None:
        known = store.find(key)["id"]
        console.print(f"[dim]result store: this run (same configuration, inputs and code) is run {known} of "
                      f"{store.path} already[/dim]")
    else:
        console.print(f"[dim]result store: run {run_id} of {store.path}[/dim]")
    warning = below_pretrained(store, report)
    if warning:
        click.echo(warning, err=True)


def below_pretrained(store: Any, report: dict[str, Any]) -> str | None:
    """A one-line warning when the run's average accuracy is below its pretrained reference, else ``None``.

    The reference is the latest ``_pretrained_`` run in the store (``fb sweep`` with ``reference: true``)
    of the same model pool, task pool (names and options) and seed, scored on the same split.
    """
    accuracy = (report.get("average") or {}).get("accuracy")
    if accuracy is None:
        return None
    split = report.get("split", "test")
    matches = [r for r in store.runs(kind="pretrained")
               if r["modelpool"] == report["modelpool"] and r["taskpool"] == report["taskpool"]
               and r["seed"] == report.get("seed", 0) and r["split"] == split]
    if not matches:
        return None
    reference = matches[-1]
    pretrained = reference["test_accuracy" if split == "test" else "validation_accuracy"]
    if pretrained is None or accuracy >= pretrained:
        return None
    return (f"warning: {report['method']} scores {100 * accuracy:.1f} % on average, below the pretrained model's "
            f"{100 * pretrained:.1f} % on model pool '{report['modelpool']['name']}' (seed {reference['seed']}, "
            f"{split} split; run {reference['id']} of the store): the merge lost what the pretrained model knew; "
            "check its hyperparameters")
