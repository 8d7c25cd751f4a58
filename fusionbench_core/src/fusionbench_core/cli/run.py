"""``fb run``: fuse a model pool with a method and evaluate the result on a task pool."""

from __future__ import annotations

from pathlib import Path

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
def run_command(run_file: Path | None, method: str | None, modelpool: str | None, taskpool: str | None,
                settings: tuple[str, ...], seed: int | None, output: Path | None, save_model: bool | None,
                overwrite: bool, dry_run: bool, as_json: bool) -> None:
    """Fuse a model pool with a method and evaluate the result on a task pool.

    \b
    Examples:
      fb run
      fb run -m ties -s scaling_factor=0.4 -s density=0.2
      fb run -m simple_average -p mini-text --json
      fb run -p tiny -s modelpool.n_models=2 -s taskpool.n_models=2 --dry-run
      fb run experiment.yaml -o runs/ties --save-model --overwrite
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
    report = execute(config)
    if as_json:
        print_json(report)
    else:
        print_report(report)
        stderr_console().print(f"[dim]report: {report.get('output', '')}/report.json[/dim]")
