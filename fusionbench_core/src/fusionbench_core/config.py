"""Run configuration: a YAML run file and/or command-line options, merged into one :class:`RunConfig`.

A run file looks like::

    method: ties
    hyperparameters: {scaling_factor: 0.3, density: 0.2}
    modelpool: mini-vision            # or {name: mini-vision, seed: 1}
    taskpool: mini-vision
    seed: 0

``-s key=value`` sets a method hyperparameter; ``-s modelpool.key=value`` and ``-s taskpool.key=value``
set options of the pools. Options on the command line win over the run file. ``--overwrite`` has
no run-file key: replacing an existing model directory is asked for on the command line only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_METHOD = "task_arithmetic"
DEFAULT_SUITE = "mini-vision"
RUN_FILE_KEYS = ("method", "hyperparameters", "modelpool", "taskpool", "seed", "output", "save_model")


@dataclass
class ComponentSpec:
    """A component name with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> ComponentSpec:
        """Accept ``"name"`` or ``{"name": ..., **options}``."""
        if isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            if "name" not in value:
                raise ConfigError(f"{where}: a mapping needs a 'name' key")
            options = {k: v for k, v in value.items() if k != "name"}
            return cls(str(value["name"]), options)
        raise ConfigError(f"{where}: expected a name or a mapping, got {type(value).__name__}")


@dataclass
class RunConfig:
    """Everything that determines a run."""

    method: ComponentSpec
    modelpool: ComponentSpec
    taskpool: ComponentSpec
    seed: int = 0
    output: Path | None = None
    save_model: bool = False
    overwrite: bool = False
    """Whether ``--save-model`` may replace the files of an existing, non-empty model directory."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (used by ``--dry-run``)."""
        return {
            "method": self.method.name,
            "hyperparameters": self.method.options,
            "modelpool": {"name": self.modelpool.name, **self.modelpool.options},
            "taskpool": {"name": self.taskpool.name, **self.taskpool.options},
            "seed": self.seed,
            "output": str(self.output) if self.output else None,
            "save_model": self.save_model,
        }


def parse_settings(pairs: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """Split ``key=value`` strings into ``{"method": {...}, "modelpool": {...}, "taskpool": {...}}``."""
    out: dict[str, dict[str, str]] = {"method": {}, "modelpool": {}, "taskpool": {}}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"option -s/--set: expected KEY=VALUE, got '{pair}'")
        target = "method"
        for prefix in ("modelpool.", "taskpool.", "method."):
            if key.startswith(prefix):
                target, key = prefix[:-1], key[len(prefix) :]
                break
        out[target][key] = value
    return out


def load_run_file(path: Path) -> dict[str, Any]:
    """Read a YAML (or JSON) run file and check its top-level keys."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"run file '{path}': {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"run file '{path}'{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"run file '{path}': expected a mapping at the top level")
    import difflib

    for key in data:
        if key not in RUN_FILE_KEYS:
            close = difflib.get_close_matches(str(key), RUN_FILE_KEYS, n=1)
            hint = f" Did you mean: {close[0]}?" if close else f" Known keys: {', '.join(RUN_FILE_KEYS)}."
            raise ConfigError(f"run file '{path}': unknown key '{key}'.{hint}")
    return data


def build_run_config(
    run_file: Path | None = None,
    *,
    method: str | None = None,
    modelpool: str | None = None,
    taskpool: str | None = None,
    settings: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    output: Path | None = None,
    save_model: bool | None = None,
    overwrite: bool = False,
) -> RunConfig:
    """Merge a run file (if any) with command-line options; the command line wins."""
    data = load_run_file(run_file) if run_file else {}
    where = f"run file '{run_file}'" if run_file else "run"
    method_spec = ComponentSpec.parse(data.get("method", DEFAULT_METHOD), f"{where}: method")
    extra_hp = data.get("hyperparameters") or {}
    if not isinstance(extra_hp, dict):
        raise ConfigError(f"{where}: 'hyperparameters' must be a mapping")
    method_spec.options.update(extra_hp)
    if method:
        if method != method_spec.name:
            method_spec = ComponentSpec(method)
    pool_spec = ComponentSpec.parse(data.get("modelpool", DEFAULT_SUITE), f"{where}: modelpool")
    if modelpool and modelpool != pool_spec.name:
        pool_spec = ComponentSpec(modelpool)
    if "taskpool" in data:
        task_spec = ComponentSpec.parse(data["taskpool"], f"{where}: taskpool")
    else:
        task_spec = ComponentSpec(pool_spec.name)
    if taskpool and taskpool != task_spec.name:
        task_spec = ComponentSpec(taskpool)
    elif modelpool and "taskpool" not in data and not taskpool:
        task_spec = ComponentSpec(pool_spec.name)
    parsed = parse_settings(settings)
    method_spec.options.update(parsed["method"])
    pool_spec.options.update(parsed["modelpool"])
    task_spec.options.update(parsed["taskpool"])
    run_seed = seed if seed is not None else data.get("seed", 0)
    try:
        run_seed = int(run_seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: seed must be an integer, got {run_seed!r}") from exc
    out = output or (Path(data["output"]) if data.get("output") else None)
    save = save_model if save_model is not None else bool(data.get("save_model", False))
    return RunConfig(method_spec, pool_spec, task_spec, run_seed, out, save, overwrite)
