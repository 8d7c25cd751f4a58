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
        (["run", "-p", "tinyy"], "Error: unknown model pool 'tinyy'. Did you mean: tiny?"),
        (["run", "-p", "tiny", "-t", "tinyy"], "Error: unknown task pool 'tinyy'. Did you mean: tiny?"),
        (["run", "-p", "tiny", "-s", "scale=1"], "Error: unknown hyperparameter 'scale' of method 'task_arithmetic'."),
        (["run", "-p", "tiny", "-s", "scaling_factor=abc"], "Error: hyperparameter 'task_arithmetic.scaling_factor' expects float, got 'abc'"),
        (["run", "-p", "tiny", "-s", "novalue"], "Error: option -s/--set: expected KEY=VALUE, got 'novalue'"),
        (["run", "-p", "tiny", "-s", "modelpool.n_model=2"], "Error: unknown option 'n_model' of model pool 'tiny'. Did you mean: n_models?"),
        (["run", "-p", "tiny", "-s", "modelpool.n_models=abc"], "Error: option 'modelpool.n_models' of model pool 'tiny' expects int, got 'abc'"),
        (["run", "-p", "tiny", "-s", "taskpool.seed=x", "--dry-run"], "Error: option 'taskpool.seed' of task pool 'tiny' expects int, got 'x'"),
        (["run", "-m", "ties", "-s", "density=2", "-p", "tiny", "--dry-run"], "Error: hyperparameter 'ties.density' must be in (0, 1], got '2'"),
        (["run", "-m", "dare", "-s", "drop_rate=1.5", "-p", "tiny", "--dry-run"], "Error: hyperparameter 'dare.drop_rate' must be in [0, 1), got '1.5'"),
        (["run", "-m", "ties", "-s", "scaling_factor=0.4", "-s", "threshold=20", "-p", "tiny", "--dry-run"], "Error: unknown hyperparameter 'threshold' of method 'ties'."),
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
    chosen, settings, models = {}, [], []
    index = 0
    while index < len(rest):
        word = rest[index]
        if command == "eval" and word == "--model" and index + 1 < len(rest):
            models.append(rest[index + 1])
            index += 2
        elif word in flags and index + 1 < len(rest):
            if flags[word] == "set":
                settings.append(rest[index + 1])
            else:
                chosen[flags[word]] = rest[index + 1]
            index += 2
        else:
            index += 1
    if command == "merge":
        chosen["method"] = rest[0]
    if command == "eval" and models:
        tasks = host.registry("modelpool").entry(chosen["modelpool"]).metadata.get("tasks")
        assert tasks is None or set(models) <= {"_pretrained_", *tasks}, f"fb {' '.join(args)}: no such model"
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


# -- outputs: never delete what fb did not write -------------------------------------------------


def _partials(directory):
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name)


def test_merge_refuses_a_non_empty_output_and_overwrite_keeps_the_users_files(fb_cli, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    refused = fb_cli("merge", "task_arithmetic", "-p", "tiny", "-o", str(out))
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (f"Error: output directory '{out}' exists and is not empty; "
                                      "pass --overwrite to replace fb's files in it")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    first = fb_cli("merge", "task_arithmetic", "-p", "tiny", "-o", str(out), "--overwrite", "--json")
    assert first.exit_code == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.safetensors", "notes.txt"]
    before = (out / "model.safetensors").read_bytes()
    again = fb_cli("merge", "task_arithmetic", "-p", "tiny", "-s", "scaling_factor=0.9", "-o", str(out),
                   "--overwrite", "--shard-size", "2KB", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json["shards"] > 1
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" not in names, "the older single-file checkpoint must not shadow the new shards"
    assert "model.safetensors.index.json" in names and (out / "notes.txt").read_text() == "my notes"
    assert "scaling_factor" in (out / "README.md").read_text() and "0.9" in (out / "README.md").read_text()
    assert before != b"" and _partials(tmp_path) == []


class _FailingMerge:
    """A tensorwise method that fails on its second tensor, as a kill, Ctrl-C or full disk would."""

    failure: BaseException = KeyboardInterrupt()

    @hookimpl
    def register_methods(self, register):
        from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm

        failure = self.failure

        class FailingMerge(TensorwiseAlgorithm):
            name = "failing_merge"
            needs_pretrained = False

            def prepare(self, pretrained, models, keys):
                self.seen = 0

            def merge_tensor(self, key, pretrained, models):
                self.seen += 1
                if self.seen == 2:
                    raise failure
                return next(iter(models))

        register("failing_merge", FailingMerge)


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")],
                         ids=["ctrl-c", "disk-full"])
def test_an_interrupted_merge_leaves_the_output_as_it_was(fb_cli, tmp_path, failure):
    out = tmp_path / "merged"
    assert fb_cli("merge", "task_arithmetic", "-p", "tiny", "-o", str(out)).exit_code == 0
    (out / "notes.txt").write_text("my notes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    plugin = _FailingMerge()
    plugin.failure = failure
    with registered_plugin(plugin, "failing-merge"):
        result = fb_cli("merge", "failing_merge", "-p", "tiny", "-o", str(out), "--overwrite")
        fresh = fb_cli("merge", "failing_merge", "-p", "tiny", "-o", str(tmp_path / "new"))
    assert result.exit_code != 0 and fresh.exit_code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "new").exists()
    assert _partials(tmp_path) == []


def test_run_save_model_refuses_a_non_empty_model_dir_unless_overwrite(fb_cli, tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("keep me")
    for dry in ((), ("--dry-run",)):
        refused = fb_cli("run", "-p", "tiny", "-o", str(out), "--save-model", *dry)
        assert refused.exit_code == 1
        assert refused.stderr.strip() == (f"Error: output directory '{out / 'model'}' exists and is not empty; "
                                          "pass --overwrite to replace fb's files in it")
    assert not (out / "report.json").exists(), "a refused run runs nothing"
    result = fb_cli("run", "-p", "tiny", "-o", str(out), "--save-model", "--overwrite", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == ["model.safetensors", "notes.txt"]
    assert result.json["model_dir"] == str(out / "model")
    assert _partials(out) == []


# -- ranges, validate() and a truthful --dry-run -------------------------------------------------


class _Ranged:
    @hookimpl
    def register_methods(self, register):
        from fusionbench_core import Hyperparameter
        from fusionbench_core.errors import ConfigError
        from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm

        class Ranged(TensorwiseAlgorithm):
            """A method with declared ranges and a cross-field check."""

            name = "ranged"
            hyperparameters = (
                Hyperparameter("density", float, 0.5, "kept fraction", minimum=0, maximum=1),
                Hyperparameter("epsilon", float, 0.1, "spread", minimum=0, maximum=1, maximum_exclusive=True),
            )

            def validate(self):
                if not (0 <= self.density - self.epsilon and self.density + self.epsilon <= 1):
                    raise ConfigError(f"method 'ranged': density ± epsilon must lie in [0, 1], "
                                      f"got {self.density} ± {self.epsilon}")

            def merge_tensor(self, key, pretrained, models):
                return pretrained

        register("ranged", Ranged)

    @hookimpl
    def register_modelpools(self, register):
        from fusionbench_core import Option
        from fusionbench_core.tiny import TinyModelPool

        class RangedPool(TinyModelPool):
            options = (Option("n_models", int, 3, "experts", minimum=1, maximum=3),
                       Option("seed", int, 0, "seed", minimum=0))

        register("ranged-pool", RangedPool)

    @hookimpl
    def register_taskpools(self, register):
        register("ranged-pool", "fusionbench_core.tiny:TinyTaskPool")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["density=2"], "Error: hyperparameter 'ranged.density' must be in [0, 1], got '2'"),
        (["epsilon=1"], "Error: hyperparameter 'ranged.epsilon' must be in [0, 1), got '1'"),
        (["density=0.95", "epsilon=0.1"], "Error: method 'ranged': density ± epsilon must lie in [0, 1], got 0.95 ± 0.1"),
        (["modelpool.n_models=9"], "Error: option 'modelpool.n_models' of model pool 'ranged-pool' must be in [1, 3], got '9'"),
        (["modelpool.seed=-1"], "Error: option 'modelpool.seed' of model pool 'ranged-pool' must be in >= 0, got '-1'"),
    ],
)
def test_dry_run_rejects_out_of_range_settings_naming_option_value_and_range(fb_cli, settings, message):
    with registered_plugin(_Ranged(), "ranged"):
        args = ["run", "-m", "ranged", "-p", "ranged-pool", "--dry-run"]
        for setting in settings:
            args += ["-s", setting]
        result = fb_cli(*args)
        ok = fb_cli("run", "-m", "ranged", "-p", "ranged-pool", "-s", "modelpool.n_models=2", "--dry-run", "--json")
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert ok.exit_code == 0, ok.stderr
    assert ok.json["modelpool"] == {"name": "ranged-pool", "n_models": 2}


def test_methods_show_prints_ranges(fb_cli):
    with registered_plugin(_Ranged(), "ranged"):
        table = fb_cli("methods", "show", "ranged")
        data = fb_cli("methods", "ranged", "--json").json
        pool = fb_cli("modelpools", "show", "ranged-pool", "--json").json
    assert table.exit_code == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "epsilon" in line)
    assert "[0, 1)" in row and "spread" in row
    assert {hp["name"]: hp["range"] for hp in data["hyperparameters"]} == {"density": "[0, 1]", "epsilon": "[0, 1)"}
    assert {opt["name"]: opt["range"] for opt in pool["options"]} == {"n_models": "[1, 3]", "seed": ">= 0"}


# -- the TaskPool.bind(modelpool) seam -----------------------------------------------------------


class _Binding:
    events: list = []

    @hookimpl
    def register_taskpools(self, register):
        from fusionbench_core.tiny import TinyTaskPool

        events = self.events

        class BindingTaskPool(TinyTaskPool):
            def bind(self, modelpool):
                events.append(("bind", modelpool.name, list(modelpool.model_names)))

            def evaluate(self, model):
                events.append(("evaluate",))
                return super().evaluate(model)

        register("binding", BindingTaskPool)


def test_run_and_eval_bind_the_task_pool_to_the_model_pool_before_evaluating(fb_cli, tmp_path):
    plugin = _Binding()
    plugin.events = []
    with registered_plugin(plugin, "binding"):
        run = fb_cli("run", "-p", "tiny", "-s", "modelpool.n_models=2", "-t", "binding", "-o", str(tmp_path))
        assert run.exit_code == 0, run.stderr
        assert plugin.events == [("bind", "tiny", ["task0", "task1"]), ("evaluate",)]
        plugin.events.clear()
        evaluated = fb_cli("eval", "-p", "tiny", "-t", "binding", "--model", "task0", "--model", "_pretrained_")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert plugin.events == [("bind", "tiny", ["task0", "task1", "task2"]), ("evaluate",), ("evaluate",)]


# -- --json wherever a command prints a result ---------------------------------------------------


class _Buildable:
    @hookimpl
    def register_modelpools(self, register):
        from fusionbench_core.tiny import TinyModelPool

        class BuildablePool(TinyModelPool):
            @classmethod
            def build_suite(cls, quick=False, seed=0, force=False):
                return {"experts": 3, "built": 0 if quick else 3, "seed": seed}

        register("buildable", BuildablePool)


def test_suites_build_json(fb_cli):
    with registered_plugin(_Buildable(), "buildable"):
        result = fb_cli("suites", "build", "buildable", "--quick", "--seed", "4", "--json")
        table = fb_cli("suites", "build", "buildable")
    assert result.exit_code == 0, result.stderr
    assert result.json == {"name": "buildable", "quick": True, "seed": 4, "experts": 3, "built": 0}
    assert table.exit_code == 0 and "experts" in table.stdout


def test_every_listing_json_is_a_list(fb_cli):
    for args in (["methods"], ["modelpools"], ["taskpools"], ["suites"], ["plugins"]):
        result = fb_cli(*args, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        assert isinstance(result.json, list) and result.json, args
        assert all(isinstance(row, dict) and "name" in row for row in result.json), args
