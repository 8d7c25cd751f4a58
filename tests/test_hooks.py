"""Every hook is tested here (one ``test_hook_<name>`` each) and documented in docs/plugins.md."""

import inspect
import json
import re
import sys
from pathlib import Path

import click
import pytest

from fusionbench_core import hookimpl, hookspecs
from fusionbench_core.plugins import get_host, registered_plugin

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOK_NAMES = sorted(
    name for name, fn in vars(hookspecs).items()
    if callable(fn) and hasattr(fn, "fusionbench_spec")
)


def test_there_are_hooks():
    assert {"register_methods", "register_modelpools", "register_taskpools", "register_commands",
            "run_started", "run_finished"} <= set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook):
    assert callable(getattr(sys.modules[__name__], f"test_hook_{hook}", None)), f"no test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented_with_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### `{hook}({params})`" in DOCS.read_text(), f"docs/plugins.md lacks ### `{hook}({params})`"


def test_every_installed_plugin_loads_and_matches_the_hookspecs():
    # The host validates each plugin on its own and marks a failing one instead of raising, so this
    # looks at the records: in this repository every installed plugin must load cleanly.
    failed = {row["name"]: row["error"] for row in get_host().plugin_rows() if row["status"] == "failed"}
    assert failed == {}
    get_host().pm.check_pending()


class _Components:
    @hookimpl
    def register_methods(self, register):
        register("hook_test_method", "fusionbench_methods.task_arithmetic:TaskArithmetic",
                 summary="λ-scaled task vectors under another name", requirement="data-free")

    @hookimpl
    def register_modelpools(self, register):
        register("hook-test-pool", "fusionbench_core.tiny:TinyModelPool", tasks=["task0", "task1"])

    @hookimpl
    def register_taskpools(self, register):
        register("hook-test-pool", "fusionbench_core.tiny:TinyTaskPool", tasks=["task0", "task1"])


def test_hook_register_methods(fb_cli):
    with registered_plugin(_Components(), "hook-components"):
        rows = {row["name"]: row for row in fb_cli("methods", "--json").json}
        result = fb_cli("run", "-m", "hook_test_method", "-p", "tiny", "-s", "scaling_factor=0", "--dry-run", "--json")
    assert rows["hook_test_method"]["plugin"] == "hook-components"
    assert rows["hook_test_method"]["summary"] == "λ-scaled task vectors under another name"
    assert result.json["hyperparameters"] == {"scaling_factor": 0.0}
    assert "hook_test_method" not in {row["name"] for row in fb_cli("methods", "--json").json}


def test_hook_register_modelpools(fb_cli, tmp_path):
    with registered_plugin(_Components(), "hook-components"):
        rows = {row["name"]: row for row in fb_cli("modelpools", "--json").json}
        result = fb_cli("run", "-p", "hook-test-pool", "-s", "modelpool.n_models=2", "-t", "tiny",
                        "-s", "taskpool.n_models=2", "--json", "-o", str(tmp_path))
    assert rows["hook-test-pool"]["tasks"] == ["task0", "task1"]
    assert result.exit_code == 0, result.output
    assert result.json["modelpool"] == {"name": "hook-test-pool", "n_models": 2}


def test_hook_register_taskpools(fb_cli, tmp_path):
    with registered_plugin(_Components(), "hook-components"):
        suites = {row["name"] for row in fb_cli("suites", "--json").json}
        result = fb_cli("run", "-p", "tiny", "-t", "hook-test-pool", "-o", str(tmp_path), "--json")
    assert "hook-test-pool" in suites
    assert result.exit_code == 0, result.output
    assert set(result.json["tasks"]) == {"task0", "task1", "task2"}


class _Command:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def register_commands(self, cli):
        self.calls += 1

        @cli.command(name="hello-hooks")
        @click.argument("who")
        def hello(who):
            """Say hello (a plugin command).

            \b
            Example:
              fb hello-hooks world
            """
            click.echo(f"hello {who}")


def test_hook_register_commands():
    from click.testing import CliRunner

    from fusionbench_core.cli import make_cli

    plugin = _Command()
    with registered_plugin(plugin, "hook-command"):
        group = make_cli()
        result = CliRunner().invoke(group, ["hello-hooks", "world"])
        again = CliRunner().invoke(group, ["hello-hooks", "again"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello world\n"
    assert again.stdout == "hello again\n"
    assert plugin.calls == 1, "register_commands runs once per root group"


class _Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def run_started(self, run):
        self.events.append(("started", run.config.method.name, run.modelpool.name, type(run.algorithm).__name__))

    @hookimpl
    def run_finished(self, run, report):
        self.events.append(("finished", report["method"], round(report["average"]["accuracy"], 6)))


def test_hook_run_started(fb_cli, tmp_path):
    recorder = _Recorder()
    with registered_plugin(recorder, "hook-recorder"):
        assert fb_cli("run", "-p", "tiny", "-m", "simple_average", "-o", str(tmp_path)).exit_code == 0
    assert recorder.events[0] == ("started", "simple_average", "tiny", "SimpleAverage")


def test_hook_run_finished(fb_cli, tmp_path):
    recorder = _Recorder()
    with registered_plugin(recorder, "hook-recorder"):
        result = fb_cli("run", "-p", "tiny", "-o", str(tmp_path), "--json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert recorder.events[-1] == ("finished", "task_arithmetic", round(report["average"]["accuracy"], 6))
    assert result.json["average"] == report["average"]


def test_root_package_is_the_installed_one_not_the_folder():
    import fusionbench_core

    assert fusionbench_core.__file__ and re.search(r"fusionbench_core/src/fusionbench_core/__init__\.py$",
                                                   fusionbench_core.__file__)
