"""The run program: resolve components, fuse, evaluate, report.

``modelpool → algorithm → fused model → taskpool → report``: the program is the only place that
sees all three components; the algorithm sees only the model pool.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .config import ComponentSpec, RunConfig
from .errors import ConfigError, UnknownComponentError
from .plugins import PluginHost, get_host
from .protocols import BaseAlgorithm, DataModelPool, Requirement

REPORT_FILE = "report.json"


@dataclass
class RunInfo:
    """What the ``run_started`` / ``run_finished`` hooks receive."""

    config: RunConfig
    algorithm: Any
    modelpool: Any
    taskpool: Any
    output: Path | None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def instantiate(host: PluginHost, kind: str, spec: ComponentSpec) -> Any:
    """Build the component ``spec`` names, checking its options against what it declares.

    For pools, the parsed options replace ``spec.options`` so reports show typed values.
    """
    entry = host.registry(kind).entry(spec.name)
    factory = entry.load()
    if kind == "method":
        instance = factory(**spec.options)
    else:
        declared = getattr(factory, "options", None)
        options = dict(spec.options)
        if declared is not None:
            by_name = {opt.name: opt for opt in declared}
            for key in options:
                if key not in by_name:
                    raise UnknownComponentError("option", key, by_name, owner=f"{kind} '{spec.name}'")
            options = {key: by_name[key].parse(value, spec.name) for key, value in options.items()}
            spec.options = options
        instance = factory(**options) if _accepts_name(factory) is False else factory(name=spec.name, **options)
    if getattr(instance, "name", None) in (None, ""):
        try:
            instance.name = spec.name
        except AttributeError:
            pass
    return instance


def _accepts_name(factory: Any) -> bool:
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "name" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (those that are imported)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def versions(host: PluginHost) -> dict[str, str]:
    """Versions of Python, core, torch (when loaded) and every loaded plugin distribution."""
    out = {"python": platform.python_version(), "fusionbench-core": __version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    for record in host.records.values():
        if record.status == "loaded" and record.version:
            out[record.distribution] = record.version
    return dict(sorted(out.items()))


def default_output_dir(config: RunConfig) -> Path:
    """``fb-runs/<method>-<modelpool>-<UTC time>`` below the working directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("fb-runs") / f"{config.method.name}-{config.modelpool.name}-{stamp}"


def plan(config: RunConfig, host: PluginHost | None = None) -> dict[str, Any]:
    """Resolve and validate every component without loading models (``fb run --dry-run``)."""
    host = host or get_host()
    method = host.registry("method").entry(config.method.name)
    algorithm_cls = method.load()
    algorithm = algorithm_cls(**config.method.options)
    host.registry("modelpool").entry(config.modelpool.name)
    host.registry("taskpool").entry(config.taskpool.name)
    settings = algorithm.settings if isinstance(algorithm, BaseAlgorithm) else dict(config.method.options)
    return {
        **config.describe(),
        "hyperparameters": settings,
        "requirement": str(getattr(algorithm, "requirement", Requirement.DATA_FREE).value),
    }


def execute(config: RunConfig, host: PluginHost | None = None, *, write: bool = True) -> dict[str, Any]:
    """Run a method over a model pool, evaluate on the task pool and return the report.

    With ``write`` the report (and the fused model with ``config.save_model``) lands in the
    output directory, each file written to a temporary name and renamed when complete.
    """
    host = host or get_host()
    algorithm = instantiate(host, "method", config.method)
    modelpool = instantiate(host, "modelpool", config.modelpool)
    taskpool = instantiate(host, "taskpool", config.taskpool)
    requirement = getattr(algorithm, "requirement", Requirement.DATA_FREE)
    if requirement is not Requirement.DATA_FREE and not isinstance(modelpool, DataModelPool):
        raise ConfigError(
            f"method '{config.method.name}' needs data ({requirement.value}), "
            f"but model pool '{config.modelpool.name}' provides none"
        )
    output = (config.output or default_output_dir(config)) if write else None
    info = RunInfo(config, algorithm, modelpool, taskpool, output)
    host.call_hook("run_started", run=info)

    seed_everything(config.seed)
    if hasattr(algorithm, "seed"):
        algorithm.seed = config.seed
    start = time.perf_counter()
    fused = algorithm.run(modelpool)
    fused_at = time.perf_counter()
    evaluation = taskpool.evaluate(fused)
    done = time.perf_counter()

    settings = algorithm.settings if isinstance(algorithm, BaseAlgorithm) else dict(config.method.options)
    cost = {
        "wall_s": round(done - start, 3),
        "fuse_s": round(fused_at - start, 3),
        "eval_s": round(done - fused_at, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        cost["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    cost.update(getattr(algorithm, "cost", {}) or {})
    report = {
        "method": config.method.name,
        "hyperparameters": settings,
        "requirement": requirement.value,
        "modelpool": {"name": config.modelpool.name, **config.modelpool.options},
        "taskpool": {"name": config.taskpool.name, **config.taskpool.options},
        "tasks": evaluation.tasks,
        "average": evaluation.average,
        "cost": cost,
        "seed": config.seed,
        "versions": versions(host),
        "started_at": info.started_at,
    }
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        if config.save_model:
            save = getattr(modelpool, "save_model", None)
            if save is None:
                raise ConfigError(f"model pool '{config.modelpool.name}' cannot save models (--save-model)")
            save(fused, output / "model")
            report["model_dir"] = str(output / "model")
        report["output"] = str(output)
        write_json_atomic(output / REPORT_FILE, report)
    host.call_hook("run_finished", run=info, report=report)
    return report


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=_json_default)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
