"""The ``fb`` command line: run, merge, evaluate and list what is installed.

Data goes to stdout (rich tables, or JSON with ``--json``); progress and errors go to stderr.
A :class:`~fusionbench_core.errors.FusionBenchError` prints one ``Error:`` line and exits 1;
any other exception does the same unless ``-v`` asks for the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import FusionBenchError
from .plugins import get_host

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def stdout_console() -> Console:
    """A console for data on stdout (no colour when piped; wide when piped, so tables are not cut)."""
    width = int(os.environ.get("COLUMNS", "0")) or (None if sys.stdout.isatty() else 160)
    return Console(file=sys.stdout, soft_wrap=False, width=width)


def stderr_console() -> Console:
    """A console for progress and messages on stderr."""
    return Console(file=sys.stderr, stderr=True)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


class DefaultGroup(click.Group):
    """A group whose bare invocation, or an unknown first word, runs its ``list`` command."""

    default_command = "list"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class FbGroup(click.Group):
    """The root group: one-line errors, tracebacks only with ``-v``, plugin commands added lazily."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except FusionBenchError as exc:
            if _verbose(ctx):
                stderr_console().print_exception(suppress=[click])
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:  # noqa: BLE001 - the CLI edge
            if _verbose(ctx):
                stderr_console().print_exception(suppress=[click])
                raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
            raise click.ClickException(f"{type(exc).__name__}: {exc} (re-run with -v for the traceback)") from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        _add_plugin_commands(self)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _add_plugin_commands(self)
        return super().list_commands(ctx)


def _verbose(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.params or {}).get("verbose")) or os.environ.get("FB_DEBUG") == "1"


_plugin_commands_added: set[int] = set()


def _add_plugin_commands(group: click.Group) -> None:
    if id(group) in _plugin_commands_added:
        return
    _plugin_commands_added.add(id(group))
    host = get_host()
    for impl in host.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(**{arg: group for arg in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - reported by `fb plugins`
            record = host.records.get(impl.plugin_name)
            if record is not None:
                record.status = "failed"
                record.error = f"register_commands: {type(exc).__name__}: {exc}"


@click.group(cls=FbGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="fb")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
def cli(verbose: bool) -> None:
    """FusionBench: fuse fine-tuned models and evaluate the result on every task.

    \b
    Examples:
      fb run                                  # task arithmetic on the offline mini-vision suite
      fb run -m ties -s scaling_factor=0.5 -p mini-text
      fb methods                              # what is installed
      fb merge ties --pretrained base/ --model a/ --model b/ -o merged/
    """


# -- run ---------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
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
@click.option("--dry-run", is_flag=True, help="Resolve and validate everything, print the plan, run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def run(run_file: Path | None, method: str | None, modelpool: str | None, taskpool: str | None,
        settings: tuple[str, ...], seed: int | None, output: Path | None, save_model: bool | None,
        dry_run: bool, as_json: bool) -> None:
    """Fuse a model pool with a method and evaluate the result on a task pool.

    \b
    Examples:
      fb run
      fb run -m ties -s scaling_factor=0.4 -s threshold=20
      fb run -m simple_average -p mini-text --json
      fb run experiment.yaml -o runs/ties
    """
    from .config import build_run_config
    from .run import execute, plan

    if run_file is not None and not run_file.exists():
        raise click.BadParameter(f"file '{run_file}' does not exist", param_hint="RUN_FILE")
    config = build_run_config(run_file, method=method, modelpool=modelpool, taskpool=taskpool,
                              settings=settings, seed=seed, output=output, save_model=save_model)
    if dry_run:
        planned = plan(config)
        if as_json:
            print_json(planned)
        else:
            _print_mapping("Plan (dry run)", planned)
        return
    report = execute(config)
    if as_json:
        print_json(report)
    else:
        print_report(report)
        stderr_console().print(f"[dim]report: {report.get('output', '')}/report.json[/dim]")


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
        table.add_row(task, *[_fmt(values.get(metric)) for metric in metrics])
    table.add_section()
    table.add_row("average", *[_fmt(report["average"].get(metric)) for metric in metrics], style="bold")
    stdout_console().print(table)
    cost = report.get("cost", {})
    if cost:
        stdout_console().print("cost: " + ", ".join(f"{k}={v}" for k, v in cost.items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_mapping(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)
    stdout_console().print(table)


# -- eval --------------------------------------------------------------------------------------


@cli.command(name="eval", context_settings=CONTEXT)
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
    """
    from .config import ComponentSpec, parse_settings
    from .protocols import PRETRAINED
    from .run import instantiate

    host = get_host()
    parsed = parse_settings(settings)
    if parsed["method"]:
        key = next(iter(parsed["method"]))
        raise click.BadParameter(f"'{key}': use modelpool.{key}=… or taskpool.{key}=…", param_hint="-s/--set")
    pool = instantiate(host, "modelpool", ComponentSpec(modelpool, parsed["modelpool"]))
    tasks = instantiate(host, "taskpool", ComponentSpec(taskpool or modelpool, parsed["taskpool"]))
    results: dict[str, Any] = {}
    if model_dir is not None:
        from .engine.sources import open_source

        source = open_source(model_dir)
        state = {key: source.get(key) for key in source.keys()}
        results[str(model_dir)] = tasks.evaluate(pool.build_model(state)).to_dict()
    else:
        names = list(model_names) or ([PRETRAINED] if pool.has_pretrained else []) + list(pool.model_names)
        for name in names:
            if name != PRETRAINED and name not in pool.model_names:
                from .errors import UnknownComponentError

                raise UnknownComponentError("model", name, [PRETRAINED, *pool.model_names], owner=f"model pool '{modelpool}'")
            results[name] = tasks.evaluate(pool.load_model(name)).to_dict()
    if as_json:
        print_json(results)
        return
    for name, result in results.items():
        print_report({"method": name, "taskpool": {"name": taskpool or modelpool}, **result})


# -- merge -------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("method")
@click.option("--pretrained", type=click.Path(exists=True, path_type=Path), help="The base model (directory or file).")
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A fine-tuned model: HF directory, .safetensors file, sharded index, or PEFT LoRA adapter dir. Repeatable.")
@click.option("-p", "--modelpool", help="Instead of --pretrained/--model: a model pool name or a YAML file.")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE", help="A method hyperparameter.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (HF format, sharded safetensors); written to a temporary path first.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the arithmetic runs.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Output dtype (default: the pretrained model's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random methods (DARE, DELLA).")
@click.option("--shard-size", default="5GB", show_default=True, help="Largest output shard, e.g. 5GB or 500MB.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def merge(method: str, pretrained: Path | None, models: tuple[Path, ...], modelpool: str | None,
          settings: tuple[str, ...], output: Path, device: str, dtype: str | None, seed: int, shard_size: str,
          as_json: bool) -> None:
    """Merge checkpoints tensor by tensor and write the result, without evaluating it.

    \b
    Examples:
      fb merge task_arithmetic --pretrained base/ --model math/ --model code/ -s scaling_factor=0.3 -o out/
      fb merge ties -p mini-vision -o merged/ --dtype bfloat16
      fb merge ties --pretrained llama/ --model lora-math/ --model lora-code/ -o out/   # PEFT adapters
    """
    from .config import parse_settings
    from .engine.api import merge_command

    parsed = parse_settings(settings)
    summary = merge_command(
        method=method,
        pretrained=pretrained,
        models=list(models),
        modelpool=modelpool,
        hyperparameters=parsed["method"],
        output=output,
        device=device,
        dtype=dtype,
        seed=seed,
        shard_size=shard_size,
        modelpool_options=parsed["modelpool"],
    )
    if as_json:
        print_json(summary)
    else:
        _print_mapping(f"merged with {method}", summary)


# -- listings ----------------------------------------------------------------------------------


def _listing_group(kind: str, plural: str, what: str) -> click.Group:
    @click.group(name=plural, cls=DefaultGroup, context_settings=CONTEXT,
                 help=f"List the installed {what}, or show one.\n\n\b\nExamples:\n  fb {plural}\n  fb {plural} --json\n  fb {plural} show NAME")
    def group() -> None:
        pass

    @group.command(name="list", context_settings=CONTEXT, help=f"List the installed {what}.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def list_command(as_json: bool) -> None:
        rows = [entry.describe() for entry in get_host().registry(kind).entries()]
        if as_json:
            print_json(rows)
            return
        table = Table(title=f"{len(rows)} {what}")
        table.add_column("name", style="bold")
        extra = "requirement" if kind == "method" else "tasks"
        table.add_column(extra)
        table.add_column("summary")
        table.add_column("plugin")
        for row in rows:
            value = row.get(extra, "")
            if isinstance(value, list):
                value = f"{len(value)}: " + ", ".join(map(str, value))
            table.add_row(row["name"], str(value), row["summary"], row["plugin"])
        stdout_console().print(table)

    @group.command(name="show", context_settings=CONTEXT, help=f"Show one of the {what} in detail (imports it).")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def show_command(name: str, as_json: bool) -> None:
        entry = get_host().registry(kind).entry(name)
        details = entry.describe()
        target = entry.load()
        doc = (getattr(target, "__doc__", None) or "").strip()
        if doc:
            details["doc"] = doc
        params = getattr(target, "hyperparameters" if kind == "method" else "options", None)
        if params:
            details["hyperparameters" if kind == "method" else "options"] = [p.describe() for p in params]
        requirement = getattr(target, "requirement", None)
        if requirement is not None:
            details["requirement"] = getattr(requirement, "value", requirement)
        describe_more = getattr(target, "describe_suite", None)
        if callable(describe_more):
            details.update(describe_more())
        if as_json:
            print_json(details)
            return
        console = stdout_console()
        params_rows = details.pop("hyperparameters", None) or details.pop("options", None)
        _print_mapping(f"{kind} {name}", {k: v for k, v in details.items()})
        if params_rows:
            table = Table(title="hyperparameters" if kind == "method" else "options")
            for column in ("name", "type", "default", "help"):
                table.add_column(column)
            for row in params_rows:
                table.add_row(row["name"], row["type"], json.dumps(row["default"]), row["help"])
            console.print(table)

    return group


cli.add_command(_listing_group("method", "methods", "fusion methods"))
cli.add_command(_listing_group("modelpool", "modelpools", "model pools"))
cli.add_command(_listing_group("taskpool", "taskpools", "task pools"))


@cli.group(cls=DefaultGroup, context_settings=CONTEXT)
def suites() -> None:
    """List the suites (model pool + task pool of one name) and build the ones that need building.

    \b
    Examples:
      fb suites
      fb suites build mini-vision --quick
    """


@suites.command(name="list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def suites_list(as_json: bool) -> None:
    """List suites: names registered both as a model pool and as a task pool."""
    host = get_host()
    taskpools = set(host.registry("taskpool").names())
    rows = [entry.describe() for entry in host.registry("modelpool").entries() if entry.name in taskpools]
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} suites")
    for column in ("name", "tasks", "summary", "plugin"):
        table.add_column(column)
    for row in rows:
        tasks = row.get("tasks", [])
        table.add_row(row["name"], f"{len(tasks)}: " + ", ".join(map(str, tasks)), row["summary"], row["plugin"])
    stdout_console().print(table)


@suites.command(name="build", context_settings=CONTEXT)
@click.argument("name")
@click.option("--quick", is_flag=True, help="The reduced variant (fewer steps and examples), as CI uses.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the expert training.")
@click.option("--force", is_flag=True, help="Rebuild even what is cached.")
def suites_build(name: str, quick: bool, seed: int, force: bool) -> None:
    """Build a suite's models (train the experts) into the cache, resuming what is done.

    \b
    Examples:
      fb suites build mini-vision
      fb suites build mini-text --quick --seed 1
    """
    pool_cls = get_host().registry("modelpool").get(name)
    build = getattr(pool_cls, "build_suite", None)
    if build is None:
        from .errors import ConfigError

        raise ConfigError(f"model pool '{name}' has nothing to build (it loads its models as they are)")
    summary = build(quick=quick, seed=seed, force=force)
    if summary:
        _print_mapping(f"built {name}", summary)


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List plugins with their distribution, status, hooks and load errors.

    \b
    Examples:
      fb plugins
      FUSIONBENCH_DISABLE_PLUGINS=ties fb plugins --json
    """
    host = get_host()
    rows = host.plugin_rows()
    if as_json:
        print_json({"plugins": rows, "conflicts": host.conflicts})
        return
    table = Table(title=f"{len(rows)} plugins")
    for column in ("name", "distribution", "version", "status", "hooks"):
        table.add_column(column)
    for row in rows:
        status = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
        style = "red" if row["error"] else None
        table.add_row(row["name"], row["distribution"], row["version"], status, ", ".join(row["hooks"]), style=style)
    stdout_console().print(table)
    for conflict in host.conflicts:
        stderr_console().print(f"[red]conflict:[/red] {conflict}")


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Versions of Python, FusionBench, torch (and CUDA) and every installed plugin.

    \b
    Examples:
      fb info
      fb info --json
    """
    import importlib.metadata
    import platform

    data: dict[str, Any] = {"python": platform.python_version(), "fusionbench-core": __version__}
    for name in ("torch", "transformers", "datasets", "peft", "safetensors"):
        try:
            data[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            data[name] = None
    if data["torch"]:
        import torch

        data["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        data["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    host = get_host()
    data["plugins"] = {row["name"]: f"{row['distribution']} {row['version']} ({row['status']})" for row in host.plugin_rows()}
    if as_json:
        print_json(data)
    else:
        _print_mapping("fb info", data)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fb")


if __name__ == "__main__":
    main()
