"""``fb eval``: score a saved model directory, or a pool's own models, on a task pool."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json, print_report


@click.command(name="eval", context_settings=CONTEXT)
@click.argument("model_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-p", "--modelpool", required=True, help="Model pool that gives the architecture (and the models).")
@click.option("-t", "--taskpool", help="Task pool. Default: the model pool's name.")
@click.option("--model", "model_names", multiple=True,
              help="Evaluate this model of the pool (repeatable; `_pretrained_` for the base). Default: all.")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="`modelpool.KEY=VALUE` / `taskpool.KEY=VALUE` pool options.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def eval_command(model_dir: Path | None, modelpool: str, taskpool: str | None, model_names: tuple[str, ...],
                 settings: tuple[str, ...], as_json: bool) -> None:
    """Evaluate a saved model directory, or the pool's own models, on a task pool.

    \b
    Examples:
      fb eval fb-runs/ties-mini-vision-20261122/model -p mini-vision
      fb eval -p mini-vision --model _pretrained_ --model mnist --json
      fb eval -p tiny -s modelpool.n_models=2 -s taskpool.n_models=2
    """
    from ..config import ComponentSpec, parse_settings
    from ..run import evaluate_models

    parsed = parse_settings(settings)
    if parsed["method"]:
        key = next(iter(parsed["method"]))
        raise click.BadParameter(f"'{key}': use modelpool.{key}=… or taskpool.{key}=…", param_hint="-s/--set")
    results = evaluate_models(ComponentSpec(modelpool, parsed["modelpool"]),
                              ComponentSpec(taskpool or modelpool, parsed["taskpool"]),
                              model_dir=model_dir, model_names=model_names)
    if as_json:
        print_json(results)
        return
    for name, result in results.items():
        print_report({"method": name, "taskpool": {"name": taskpool or modelpool}, **result})
