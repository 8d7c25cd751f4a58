"""The fb CLI end to end on the tiny suite: tables, JSON reports, errors, run files."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fusionbench_core import hookimpl
from fusionbench_core.cli import cli, make_cli
from fusionbench_core.plugins import registered_plugin

ROOT = Path(__file__).resolve().parents[2]


def test_listing_never_imports_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fusionbench_core.cli import cli\n"
        "for args in (['methods', '--json'], ['modelpools', '--json'], ['taskpools', '--json'], ['plugins', '--json'],"
        " ['suites', '--json'], ['--help'], ['run', '--help']):\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "assert 'torch' not in sys.modules, 'listing imported torch'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_methods_json_lists_registered_methods_with_requirement(fb_cli):
    result = fb_cli("methods", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in result.json}
    assert rows["task_arithmetic"]["requirement"] == "data-free"
    assert rows["task_arithmetic"]["distribution"] == "fusionbench-methods"
    assert rows["task_arithmetic"]["target"] == "fusionbench_methods.task_arithmetic:TaskArithmetic"


def test_methods_show_lists_hyperparameters(fb_cli):
    result = fb_cli("methods", "show", "task_arithmetic", "--json")
    assert result.exit_code == 0, result.output
    hps = {hp["name"]: hp for hp in result.json["hyperparameters"]}
    assert hps["scaling_factor"]["default"] == 0.3
    assert hps["scaling_factor"]["type"] == "float"


def test_run_task_arithmetic_on_tiny_prints_table_and_writes_report(fb_cli, tmp_path):
    out = tmp_path / "run"
    result = fb_cli("run", "--method", "task_arithmetic", "-p", "tiny", "-o", str(out))
    assert result.exit_code == 0, result.output
    for needle in ("task0", "task1", "task2", "average", "accuracy", "loss"):
        assert needle in result.stdout
    report = json.loads((out / "report.json").read_text())
    for key in ("method", "hyperparameters", "modelpool", "taskpool", "tasks", "average", "cost", "versions", "seed"):
        assert key in report
    assert report["method"] == "task_arithmetic"
    assert report["hyperparameters"] == {"scaling_factor": 0.3}
    assert set(report["tasks"]) == {"task0", "task1", "task2"}
    accuracies = [metrics["accuracy"] for metrics in report["tasks"].values()]
    assert report["average"]["accuracy"] == pytest.approx(sum(accuracies) / 3)
    cost = report["cost"]
    assert set(cost) == {"wall_s", "fuse_s", "eval_s", "peak_rss_mb"}
    assert cost["wall_s"] == pytest.approx(cost["fuse_s"] + cost["eval_s"], abs=0.0015)
    from fusionbench_core.run import peak_rss_mb

    # fb ran in this process, which holds torch: its peak is this process's peak so far, well over 50 MiB.
    assert 50 < cost["peak_rss_mb"] <= round(peak_rss_mb(), 1)
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_run_json_equals_written_report(fb_cli, tmp_path):
    out = tmp_path / "run"
    result = fb_cli("run", "-m", "simple_average", "-p", "tiny", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert result.json == json.loads((out / "report.json").read_text())


def test_same_config_and_seed_give_same_results_and_model_bytes(fb_cli, tmp_path):
    reports = []
    for name in ("a", "b"):
        result = fb_cli("run", "-p", "tiny", "-m", "task_arithmetic", "--seed", "3", "-o", str(tmp_path / name),
                        "--save-model", "--json")
        assert result.exit_code == 0, result.output
        reports.append(result.json)
    assert reports[0]["tasks"] == reports[1]["tasks"]
    a = (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model" / "model.safetensors").read_bytes()
    assert a == b


def test_hyperparameter_changes_the_result(fb_cli, tmp_path):
    zero = fb_cli("run", "-p", "tiny", "-s", "scaling_factor=0", "-o", str(tmp_path / "z"), "--json").json
    pretrained = fb_cli("eval", "-p", "tiny", "--model", "_pretrained_", "--json").json["_pretrained_"]
    assert zero["tasks"] == pretrained["tasks"], "λ=0 must give the pretrained model"


def test_run_file_with_command_line_override(fb_cli, tmp_path):
    run_file = tmp_path / "exp.yaml"
    run_file.write_text("method: task_arithmetic\nhyperparameters: {scaling_factor: 0.1}\nmodelpool: tiny\nseed: 2\n")
    result = fb_cli("run", str(run_file), "-s", "scaling_factor=0.2", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert result.json["hyperparameters"] == {"scaling_factor": 0.2}
    assert result.json["taskpool"]["name"] == "tiny"
    assert result.json["seed"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "-m", "task_arithmetc", "-p", "tiny"], "Error: unknown method 'task_arithmetc'. Did you mean: task_arithmetic?"),
        (["run", "-p", "tinyy"], "Error: unknown modelpool 'tinyy'. Did you mean: tiny?"),
        (["run", "-p", "tiny", "-s", "scale=1"], "Error: unknown hyperparameter 'scale' of method 'task_arithmetic'."),
        (["run", "-p", "tiny", "-s", "scaling_factor=abc"], "Error: hyperparameter 'task_arithmetic.scaling_factor' expects float, got 'abc'"),
        (["run", "-p", "tiny", "-s", "novalue"], "Error: option -s/--set: expected KEY=VALUE, got 'novalue'"),
        (["run", "-p", "tiny", "-s", "modelpool.n_model=2"], "Error: unknown option 'n_model' of model pool 'tiny'. Did you mean: n_models?"),
        (["run", "-p", "tiny", "-s", "modelpool.n_models=abc"], "Error: option 'modelpool.n_models' of model pool 'tiny' expects int, got 'abc'"),
        (["run", "-p", "tiny", "-s", "taskpool.seed=x", "--dry-run"], "Error: option 'taskpool.seed' of task pool 'tiny' expects int, got 'x'"),
        (["methods", "show", "tie"], "Error: unknown method 'tie'."),
        (["methods", "tie"], "Error: unknown method 'tie'. Did you mean: ties"),
    ],
)
def test_bad_input_is_one_line_error_with_nonzero_exit(fb_cli, args, message):
    result = fb_cli(*args)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stderr


def test_bad_run_file_names_file_and_key(fb_cli, tmp_path):
    run_file = tmp_path / "bad.yaml"
    run_file.write_text("methd: ties\n")
    result = fb_cli("run", str(run_file))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: run file '{run_file}': unknown key 'methd'. Did you mean: method?"
    run_file.write_text("method: [unclosed\n")
    result = fb_cli("run", str(run_file))
    assert "not valid YAML" in result.stderr and str(run_file) in result.stderr


def test_traceback_only_with_verbose(tmp_path):
    env = {**os.environ, "FUSIONBENCH_LOAD_PLUGINS": "core"}
    quiet = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", "merge", "nope", "-o", str(tmp_path / "x")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 1
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", "-v", "merge", "nope", "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr


def _walk(group, ctx, path):
    """Every command below ``group`` as the user reaches it, plugin commands included."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield [*path, name], command
        if isinstance(command, click.Group):
            yield from _walk(command, ctx, [*path, name])


def _help_texts():
    from click.testing import CliRunner

    root = make_cli()
    with click.Context(root) as ctx:
        paths = [path for path, _command in _walk(root, ctx, [])]
    texts = {(): CliRunner().invoke(root, ["--help"]).output}
    for path in paths:
        result = CliRunner().invoke(root, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        texts[tuple(path)] = result.output
    return texts


class _UndocumentedCommand:
    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="no-example-here")
        def no_example():
            """A plugin command whose help shows no example."""


def test_every_command_help_carries_an_example():
    missing = [path for path, text in _help_texts().items() if "Example" not in text]
    assert missing == []
    with registered_plugin(_UndocumentedCommand(), "undocumented-command"):
        missing = [path for path, text in _help_texts().items() if "Example" not in text]
    assert missing == [("no-example-here",)], "the walk must reach commands that plugins add"


def _example_lines(text):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("fb "):
            yield shlex.split(line.split("  #")[0])[1:]


def _check_example(host, args):
    """Check one ``fb ARGS`` example against the registry: method, pools, every -s key and value."""
    from fusionbench_core.config import DEFAULT_METHOD, DEFAULT_SUITE, parse_settings
    from fusionbench_core.run import ROLES

    command, rest = args[0], args[1:]
    flags = {"-m": "method", "--method": "method", "-p": "modelpool", "--modelpool": "modelpool",
             "-t": "taskpool", "--taskpool": "taskpool", "-s": "set", "--set": "set"}
    chosen, settings = {}, []
    index = 0
    while index < len(rest):
        word = rest[index]
        if word in flags and index + 1 < len(rest):
            if flags[word] == "set":
                settings.append(rest[index + 1])
            else:
                chosen[flags[word]] = rest[index + 1]
            index += 2
        else:
            index += 1
    if command == "merge":
        chosen["method"] = rest[0]
    if command not in ("run", "merge", "eval") or (not settings and "method" not in chosen):
        return 0
    if command == "run":
        chosen.setdefault("method", DEFAULT_METHOD)
    if command in ("run", "eval"):
        chosen.setdefault("modelpool", DEFAULT_SUITE)
        chosen.setdefault("taskpool", chosen["modelpool"])
    parsed = parse_settings(settings)
    checked = 0
    for kind, values in parsed.items():
        if not values:
            continue
        assert kind in chosen, f"fb {' '.join(args)}: -s {kind}.… without a {kind}"
        target = host.registry(kind).get(chosen[kind])
        declared = {p.name: p for p in getattr(target, "hyperparameters" if kind == "method" else "options", ())}
        for key, value in values.items():
            assert key in declared, f"fb {' '.join(args)}: {ROLES[kind]} '{chosen[kind]}' has no '{key}'"
            declared[key].parse(value, chosen[kind])
            checked += 1
    for kind in ("method", "modelpool", "taskpool"):
        if kind in chosen and not chosen[kind].endswith((".yaml", ".yml")):
            host.registry(kind).entry(chosen[kind])
    return checked


def test_every_set_example_in_help_readme_and_config_docs_is_valid():
    import yaml

    from fusionbench_core import config as config_module
    from fusionbench_core.plugins import get_host

    host = get_host()
    checked = 0
    for path, text in _help_texts().items():
        for args in _example_lines(text):
            checked += _check_example(host, args)
    readme = (ROOT / "README.md").read_text()
    usage = readme.split("## Using `fb`", 1)[1].split("\n## ", 1)[0]
    for args in _example_lines(usage):
        checked += _check_example(host, args)
    run_file = config_module.__doc__.split("A run file looks like::", 1)[1].split("\n\n")[1]
    data = yaml.safe_load(run_file)
    method = host.registry("method").get(data["method"])
    declared = {hp.name: hp for hp in method.hyperparameters}
    for key, value in data["hyperparameters"].items():
        assert key in declared, f"config.py's run file: method '{data['method']}' has no '{key}'"
        declared[key].parse(value, data["method"])
        checked += 1
    assert checked >= 8


def test_info_json_reports_versions(fb_cli):
    result = fb_cli("info", "--json")
    assert result.exit_code == 0
    assert result.json["fusionbench-core"]
    assert result.json["plugins"]["core"].startswith("fusionbench-core")
