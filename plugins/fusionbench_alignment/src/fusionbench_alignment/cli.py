"""Entry point ``connect``: the ``fb connect`` command (loss barriers along linear paths and Bézier curves)."""

from __future__ import annotations

from pathlib import Path

import click

from fusionbench_core import hookimpl

ALIGNERS = ("weight_matching", "activation_matching", "ot_fusion")


@click.command(name="connect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_a", required=False)
@click.argument("model_b", required=False)
@click.option("-p", "--modelpool", required=True, help="Model pool: the architecture, the data and (by name) the models.")
@click.option("--task", help="Task whose loss and accuracy are measured. Default: the pool's first task.")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="`modelpool.KEY=VALUE` pool options; `KEY=VALUE` hyperparameters of the --align method.")
@click.option("--align", "align", type=click.Choice(ALIGNERS), help="Also measure the path after aligning B to A.")
@click.option("--curve", is_flag=True, help="Also fit a quadratic Bézier curve (one trainable control point).")
@click.option("--curve-steps", type=click.IntRange(min=1), default=300, show_default=True, help="Training steps of the curve.")
@click.option("--curve-lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate of the curve's control point.")
@click.option("--points", type=click.IntRange(min=3), default=25, show_default=True, help="Points along each path.")
@click.option("--examples", type=click.IntRange(min=1), help="Cap on test examples per point. Default: the whole split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the alignment and the curve.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for connect.json and connect.png. Default: fb-runs/connect-<pool>-<A>-<B>.")
@click.option("--overwrite", is_flag=True, help="Replace connect.json and connect.png already in the directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
def connect_command(model_a, model_b, modelpool, task, settings, align, curve, curve_steps, curve_lr, points, examples, seed,
                    output, overwrite, as_json):
    """Loss and accuracy along the linear path between two models, and the loss and error barriers.

    A and B are model names of the pool or checkpoint paths (a directory with model.safetensors, or
    a .safetensors file) of the pool's architecture. Without A and B: the matrix of pairwise
    barriers of the pool's models. BatchNorm statistics are re-estimated at every point.

    \b
    Examples:
      fb connect init0 init1 -p independent-mlp --align weight_matching --curve
      fb connect -p independent-cnn -s modelpool.n_models=3
    """
    import json

    from fusionbench_core.config import ComponentSpec, parse_settings
    from fusionbench_core.errors import ConfigError
    from fusionbench_core.plugins import get_host
    from fusionbench_core.run import instantiate

    from .report import connect_pair, pairwise_matrix, write_outputs

    if (model_a is None) != (model_b is None):
        raise ConfigError("fb connect takes two models (A and B), or none for the pool's matrix")
    parsed = parse_settings(settings)
    if parsed["taskpool"]:
        raise ConfigError("fb connect takes no task pool options (taskpool.*); the model pool scores the task")
    host = get_host()
    pool = instantiate(host, "modelpool", ComponentSpec(modelpool, parsed["modelpool"]))
    aligner = None
    if align:
        aligner = instantiate(host, "method", ComponentSpec(align, parsed["method"]))
        aligner.seed = seed
    elif parsed["method"]:
        raise ConfigError(f"'{next(iter(parsed['method']))}': hyperparameters need --align (pool options: modelpool.KEY=…)")
    task = task or default_task(pool)
    name = f"connect-{modelpool}" if model_a is None else f"connect-{modelpool}-{Path(model_a).name}-{Path(model_b).name}"
    out = output or Path("fb-runs") / name
    check_outputs(out, overwrite=overwrite)  # before the paths are computed
    if model_a is None:
        result = pairwise_matrix(pool, task, points=points, examples=examples, aligner=aligner)
    else:
        result = connect_pair(pool, model_a, model_b, task, points=points, examples=examples, aligner=aligner,
                              curve=curve, curve_steps=curve_steps, curve_lr=curve_lr, seed=seed)
    result["modelpool"] = {"name": modelpool, **parsed["modelpool"]}
    result["files"] = write_outputs(result, out)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    for line in summary_lines(result):
        click.echo(line)


def check_outputs(directory: Path, *, overwrite: bool) -> None:
    """Refuse an output directory holding connect.json or connect.png unless ``overwrite`` (fb merge's rule)."""
    from fusionbench_core.errors import ConfigError

    for name in OUTPUTS:
        if (directory / name).exists() and not overwrite:
            raise ConfigError(f"'{directory / name}' exists; pass --overwrite to replace it")


OUTPUTS = ("connect.json", "connect.png")


def default_task(pool) -> str:
    """The pool's first task (``pool.tasks``), else its first model's name."""
    tasks = list(getattr(pool, "tasks", None) or pool.model_names)
    return tasks[0]


def summary_lines(result: dict) -> list[str]:
    """A short text summary of a ``fb connect`` result."""
    lines = [f"task {result['task']}"]
    if "matrix" in result:
        names = result["models"]
        lines.append("loss barrier  " + "  ".join(f"{n:>10}" for n in names))
        for name, row in zip(names, result["matrix"]["loss_barrier"]):
            lines.append(f"{name:>12}  " + "  ".join(f"{v:10.4f}" for v in row))
    else:
        for label, path in result["paths"].items():
            lines.append(f"{label:>8}: loss barrier {path['loss_barrier']:.4f}, error barrier {path['error_barrier']:.4f}, "
                         f"endpoints loss {path['loss'][0]:.4f} / {path['loss'][-1]:.4f}")
    lines.append(f"wrote {', '.join(result['files'])}")
    return lines


@hookimpl
def register_commands(cli):
    """Add ``fb connect``."""
    cli.add_command(connect_command)
