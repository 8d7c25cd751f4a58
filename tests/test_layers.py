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
    assert _offenders(ROOT / "fusionbench_core" / "src", forbidden) == []


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
