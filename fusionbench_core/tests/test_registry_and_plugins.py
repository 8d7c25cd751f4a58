"""Registries and plugin discovery: lazy entries, duplicates, broken plugins, env filters."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fusionbench_core import hookimpl
from fusionbench_core.errors import DuplicateNameError, PluginLoadError, UnknownComponentError
from fusionbench_core.plugins import PluginHost
from fusionbench_core.registry import Entry, Registry


def _entry(name, plugin="p", dist="d", target="json:dumps"):
    return Entry(kind="method", name=name, target=target, plugin=plugin, distribution=dist)


def test_lazy_entry_imports_only_on_load():
    entry = _entry("x", target="json:dumps")
    assert entry.describe()["target"] == "json:dumps"
    assert entry.load() is json.dumps


def test_lazy_entry_import_failure_is_one_line_naming_plugin_and_target():
    entry = _entry("x", plugin="brokenplug", dist="broken-dist", target="no_such_module_xyz:Thing")
    with pytest.raises(PluginLoadError, match=r"method 'x' from plugin 'brokenplug' \(broken-dist\).*no_such_module_xyz"):
        entry.load()


def test_duplicate_name_names_both_owners():
    registry = Registry("method")
    registry.add(_entry("ties", plugin="a", dist="dist-a"))
    with pytest.raises(DuplicateNameError) as info:
        registry.add(_entry("ties", plugin="b", dist="dist-b"))
    assert "dist-a" in str(info.value) and "dist-b" in str(info.value)


def test_unknown_name_did_you_mean_and_install_hint():
    registry = Registry("modelpool", {"clip-": "fusionbench-vision-not-installed"})
    registry.add(_entry("mini-vision"))
    with pytest.raises(UnknownComponentError, match="Did you mean: mini-vision"):
        registry.entry("mini-vison")
    with pytest.raises(UnknownComponentError, match="pip install fusionbench-vision-not-installed"):
        registry.entry("clip-vit-b32-ta8")


def _message(registry, name):
    with pytest.raises(UnknownComponentError) as info:
        registry.entry(name)
    return str(info.value)


def test_install_hint_only_for_what_is_not_installed_or_registered():
    installed = Registry("modelpool", {"clip-": "fusionbench-core"})  # installed in every test environment
    installed.add(_entry("mini-vision"))
    assert "pip install" not in _message(installed, "clip-vit-b99")
    registered = Registry("modelpool", {"clip-": "fusionbench-vision-not-installed"})
    registered.add(_entry("clip-vit-b32-ta8"))
    message = _message(registered, "clip-vit-b99")
    assert "Did you mean: clip-vit-b32-ta8?" in message and "pip install" not in message
    methods = Registry("method", {"": ("fusionbench-core", "fusionbench-methods-not-installed")})
    assert _message(methods, "ties").endswith("Methods come with: pip install fusionbench-methods-not-installed")


class _PluginA:
    @hookimpl
    def register_methods(self, register):
        register("dup", "json:dumps", summary="from A")


class _PluginB:
    @hookimpl
    def register_methods(self, register):
        register("dup", "json:loads", summary="from B")
        register("only_b", "json:loads")


def test_host_records_conflicts_and_keeps_other_names_working():
    host = PluginHost(load_entry_points=False)
    host.register_plugin(_PluginA(), "plug-a", distribution="dist-a")
    host.register_plugin(_PluginB(), "plug-b", distribution="dist-b")
    registry = host.registry("method")
    assert registry.get("only_b") is json.loads
    with pytest.raises(DuplicateNameError, match="plug-a.*dist-a.*plug-b.*dist-b"):
        registry.entry("dup")
    assert len(host.conflicts) == 1


class _RaisingPlugin:
    @hookimpl
    def register_methods(self, register):
        raise RuntimeError("boom")


def test_plugin_whose_hook_raises_is_reported_not_fatal():
    host = PluginHost(load_entry_points=False)
    host.register_plugin(_RaisingPlugin(), "raiser", distribution="dist-r")
    host.register_plugin(_PluginB(), "plug-b", distribution="dist-b")
    assert "only_b" in host.registry("method")
    row = next(r for r in host.plugin_rows() if r["name"] == "raiser")
    assert row["status"] == "failed" and "RuntimeError: boom" in row["error"]


class _TypoPlugin:
    @hookimpl
    def register_method(self, register):
        register("never", "json:dumps")


def test_registering_a_plugin_with_an_unknown_hook_in_code_raises_and_registers_nothing():
    host = PluginHost(load_entry_points=False)
    with pytest.raises(PluginLoadError, match=r"^plugin 'typo': unknown hook 'register_method' \(no such hookspec\)\. "
                                              r"Did you mean: register_methods\?$"):
        host.register_plugin(_TypoPlugin(), "typo")
    assert host.pm.get_plugin("typo") is None and "typo" not in host.records


def _fake_distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write an installed-looking distribution (dist-info + modules) under ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[fusionbench]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
from fusionbench_core import hookimpl

@hookimpl
def register_methods(register):
    register("fake_merge", "fake_good_mod:Missing", summary="a fake method", requirement="data-free")
"""

BROKEN = """
raise ImportError("this plugin is broken on purpose")
"""

TYPO = """
from fusionbench_core import hookimpl

@hookimpl
def register_method(register):
    register("typo_merge", "fake_typo_mod:Missing")
"""

DUPLICATE = """
from fusionbench_core import hookimpl

@hookimpl
def register_methods(register):
    register("fake_merge", "fake_dup_mod:Other")
"""


def _fb(args, root, **env_extra):
    env = {**os.environ, "PYTHONPATH": str(root), **env_extra}
    return subprocess.run([sys.executable, "-m", "fusionbench_core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture
def fake_plugins(tmp_path):
    _fake_distribution(tmp_path, "fake-good", {"fake_good": "fake_good_mod"}, {"fake_good_mod": GOOD})
    _fake_distribution(tmp_path, "fake-broken", {"fake_broken": "fake_broken_mod"}, {"fake_broken_mod": BROKEN})
    return tmp_path


def test_broken_plugin_is_listed_with_its_error_and_the_rest_works(fake_plugins):
    result = _fb(["plugins", "--json"], fake_plugins)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fake_broken"]["status"] == "failed"
    assert "this plugin is broken on purpose" in rows["fake_broken"]["error"]
    assert rows["fake_good"]["status"] == "loaded"
    methods = _fb(["methods", "--json"], fake_plugins)
    names = {row["name"]: row for row in json.loads(methods.stdout)}
    assert names["fake_merge"]["distribution"] == "fake-good"
    assert "task_arithmetic" in names


def test_duplicate_across_distributions_names_both(fake_plugins):
    _fake_distribution(fake_plugins, "fake-dup", {"fake_dup": "fake_dup_mod"}, {"fake_dup_mod": DUPLICATE})
    result = _fb(["run", "-m", "fake_merge", "-p", "tiny"], fake_plugins)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: method 'fake_merge' is registered twice")
    assert "fake-good" in last and "fake-dup" in last
    listing = json.loads(_fb(["plugins", "--json"], fake_plugins).stdout)
    assert isinstance(listing, list), "fb plugins --json is a list of plugin records, like every listing"
    conflicts = {row["name"]: row["conflicts"] for row in listing}
    assert conflicts["fake_good"] == conflicts["fake_dup"] == [last.removeprefix("Error: ")]
    assert conflicts["task_arithmetic"] == []


def test_plugin_with_a_misspelt_hook_fails_alone(fake_plugins):
    _fake_distribution(fake_plugins, "fake-typo", {"fake_typo": "fake_typo_mod"}, {"fake_typo_mod": TYPO})
    listing = _fb(["plugins", "--json"], fake_plugins)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["fake_typo"]["status"] == "failed"
    assert rows["fake_typo"]["error"] == "unknown hook 'register_method' (no such hookspec). Did you mean: register_methods?"
    assert rows["fake_good"]["status"] == "loaded"
    table = _fb(["plugins"], fake_plugins)
    assert table.returncode == 0 and "fake_typo" in table.stdout and "register_method" in table.stdout
    methods = _fb(["methods", "--json"], fake_plugins)
    assert methods.returncode == 0, methods.stderr
    names = {row["name"] for row in json.loads(methods.stdout)}
    assert {"fake_merge", "task_arithmetic"} <= names and "typo_merge" not in names
    run = _fb(["run", "-p", "tiny", "-m", "task_arithmetic", "--dry-run", "--json"], fake_plugins)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["method"] == "task_arithmetic"


def test_env_vars_load_only_or_block_named_plugins(fake_plugins):
    only = json.loads(_fb(["plugins", "--json"], fake_plugins, FUSIONBENCH_LOAD_PLUGINS="fake_good").stdout)
    status = {row["name"]: row["status"] for row in only}
    assert status["fake_good"] == "loaded"
    assert status["fake_broken"] == "skipped" and status["task_arithmetic"] == "skipped"
    blocked = json.loads(_fb(["methods", "--json"], fake_plugins, FUSIONBENCH_DISABLE_PLUGINS="fake-good,ties").stdout)
    assert "fake_merge" not in {row["name"] for row in blocked}
    none = json.loads(_fb(["methods", "--json"], fake_plugins, FUSIONBENCH_LOAD_PLUGINS="").stdout)
    assert none == []
