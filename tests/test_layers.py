"""The layering rules, checked on the source: who may import whom."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package_dir: Path) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path] = names
    return found


def _offenders(package_dir: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path, names in _imports(package_dir).items()
        for name in names
        if name.split(".")[0] in forbidden
    )


def test_core_imports_no_plugin_or_suite():
    forbidden = ("fusionbench_vision", "fusionbench_nlp", "fusionbench_methods", "fusionbench_data_methods",
                 "fusionbench_median", "transformers", "datasets", "peft")
    # The suite kit's task catalog saves and loads prepared tasks with datasets (imported only then).
    kit_reads_datasets = f"{Path('fusionbench_core/src/fusionbench_core/suitekit')}/"
    assert [o for o in _offenders(ROOT / "fusionbench_core" / "src", forbidden)
            if not (o.startswith(kit_reads_datasets) and o.endswith(" imports datasets"))] == []


@pytest.mark.parametrize("plugin", sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "src").is_dir()))
def test_method_plugins_know_no_modality(plugin):
    src = ROOT / "plugins" / plugin / "src"
    assert _offenders(src, ("fusionbench_vision", "fusionbench_nlp", "transformers", "datasets", "peft")) == []
    mentions = [str(p.relative_to(ROOT)) for p in src.rglob("*.py")
                if any(word in p.read_text() for word in ("CLIPVision", "GPT2", "T5ForConditional"))]
    assert mentions == []


def test_vision_and_nlp_never_import_each_other():
    assert _offenders(ROOT / "fusionbench_vision" / "src", ("fusionbench_nlp",)) == []
    assert _offenders(ROOT / "fusionbench_nlp" / "src", ("fusionbench_vision",)) == []


def test_core_outside_the_suite_kit_never_imports_it():
    """The suite kit (``fusionbench_core.suitekit``) may import core and the engine, never the reverse."""
    src = ROOT / "fusionbench_core" / "src"
    kit = src / "fusionbench_core" / "suitekit"
    offenders = []
    for path in src.rglob("*.py"):
        if kit in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{alias.name}" for alias in node.names]
            else:
                continue
            if any("suitekit" in name.split(".") for name in names):
                offenders.append(f"{path.relative_to(ROOT)} imports the suite kit")
    assert offenders == []


CORE = ROOT / "fusionbench_core" / "src" / "fusionbench_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_imports(path: Path, *, module_level_only: bool) -> set[str]:
    """The ``fusionbench_core`` modules ``path`` imports, relative imports resolved.

    ``module_level_only`` keeps the statements that run on import, ``if TYPE_CHECKING:`` blocks
    included (an import cycle there is still a cycle of the design), and skips those in functions.
    """
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = []
    if module_level_only:
        stack = list(tree.body)
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack.extend(node.body + node.orelse + getattr(node, "handlers", []) + getattr(node, "finalbody", []))
            elif isinstance(node, ast.ExceptHandler):
                stack.extend(node.body)
    else:
        nodes = list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "fusionbench_core"}


def test_engine_imports_nothing_of_the_application_layer():
    application = ("run", "plugins", "config", "cli", "merge", "registry", "hookspecs")
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (CORE / "engine").rglob("*.py")
        for name in _core_imports(path, module_level_only=False)
        if name.split(".")[1:2] and name.split(".")[1] in application
    )
    assert offenders == []


def test_core_has_no_import_cycle_at_module_level():
    modules = {_module_name(path): path for path in CORE.rglob("*.py")}
    graph = {
        name: {target for target in _core_imports(path, module_level_only=True) if target in modules and target != name}
        for name, path in modules.items()
    }
    cycles = []

    def visit(node, trail):
        for target in sorted(graph[node]):
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == []
