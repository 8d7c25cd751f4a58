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
import shutil
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .config import ComponentSpec, RunConfig
from .errors import ConfigError, UnknownComponentError
from .hookspecs import RunInfo
from .needs import check_run_needs
from .plugins import PluginHost, get_host
from .protocols import PRETRAINED, BaseAlgorithm, Requirement, ScoresSplits, bind_taskpool

__all__ = ["REPORT_FILE", "RunInfo", "check_splits", "evaluate_models", "execute", "instantiate", "load_checkpoint",
           "parse_options", "plan", "score_and_report"]

REPORT_FILE = "report.json"
MODEL_DIR = "model"
"""Where ``fb run --save-model`` puts the fused model inside the run directory."""

ROLES = {"method": "method", "modelpool": "model pool", "taskpool": "task pool"}
"""How errors name each kind of component."""


def parse_options(kind: str, spec: ComponentSpec, factory: Any) -> dict[str, Any]:
    """Check a pool's options against the ``options`` (:class:`~fusionbench_core.protocols.Option`) it declares.

    Returns the parsed (typed, range-checked) values; errors name the role and the pool, e.g.
    ``option 'modelpool.n_models' of model pool 'tiny' expects int, got 'abc'``. A pool that
    declares no ``options`` gets its options as given.
    """
    declared = getattr(factory, "options", None)
    if declared is None:
        return dict(spec.options)
    by_name = {opt.name: opt for opt in declared}
    owner = f"{ROLES[kind]} '{spec.name}'"
    parsed = {}
    for key, value in spec.options.items():
        if key not in by_name:
            raise UnknownComponentError("option", key, by_name, owner=owner)
        parsed[key] = by_name[key].parse(value, subject=f"option '{kind}.{key}' of {owner}")
    return parsed


def instantiate(host: PluginHost, kind: str, spec: ComponentSpec, *, seed: int | None = None) -> Any:
    """Build the component ``spec`` names, checking its options against what it declares.

    A method parses and range-checks its hyperparameters and runs its ``validate()`` when built.
    For pools, the parsed options replace ``spec.options`` so reports show typed values. A pool
    whose class names a ``seed_option`` (a suite that trains its own experts, say) gets the run's
    ``seed`` for that option when it is not given (see :func:`seed_bound`); ``spec.options`` stays
    as given, so the seed is recorded once, as the run's.
    """
    entry = host.registry(kind).entry(spec.name)
    factory = entry.load()
    if kind == "method":
        instance = factory(**spec.options)
    else:
        options = parse_options(kind, spec, factory)
        spec.options = options
        bound = seed_bound(factory, options)
        arguments = {**options, bound: seed} if bound and seed is not None else options
        instance = factory(**arguments) if _accepts_name(factory) is False else factory(name=spec.name, **arguments)
    if getattr(instance, "name", None) in (None, ""):
        try:
            instance.name = spec.name
        except AttributeError:
            pass
    return instance


def seed_bound(factory: Any, options: dict[str, Any]) -> str | None:
    """The option of a pool class that follows the run's seed here: its ``seed_option``, unless given.

    A suite that trains its own experts declares ``seed_option = "seed"``: ``fb run --seed 2`` and a
    sweep's ``seeds`` then score the experts trained with that seed, so the spread over seeds
    includes the experts' training. ``-s modelpool.seed=N`` pins it instead.
    """
    name = getattr(factory, "seed_option", None)
    return name if name and name not in options else None


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
    """Resolve and validate every component without loading models (``fb run --dry-run``).

    The algorithm is built (so its hyperparameters are parsed, range-checked and cross-checked by
    ``validate()``), both pools' options are parsed against what the pools declare, and an output
    that ``--save-model`` would refuse to overwrite is refused here too.
    """
    host = host or get_host()
    algorithm = instantiate(host, "method", config.method)
    for kind, spec in (("modelpool", config.modelpool), ("taskpool", config.taskpool)):
        spec.options = parse_options(kind, spec, host.registry(kind).get(spec.name))
    if config.save_model and config.output is not None:
        check_output_dir(config.output / MODEL_DIR, overwrite=config.overwrite)
    settings = algorithm.settings if isinstance(algorithm, BaseAlgorithm) else dict(config.method.options)
    return {
        **config.describe(),
        "hyperparameters": settings,
        "requirement": str(getattr(algorithm, "requirement", Requirement.DATA_FREE).value),
    }


def execute(config: RunConfig, host: PluginHost | None = None, *, write: bool = True,
            splits: Iterable[str] = (), predictions: bool = False) -> dict[str, Any]:
    """Run a method over a model pool, evaluate on the task pool and return the report.

    ``splits`` (used by ``fb sweep``) asks for more splits scored on the same fused model, e.g.
    ``("validation", "test")``: the task pool must offer
    :class:`~fusionbench_core.protocols.ScoresSplits`; the report then also holds ``splits``
    (``{split: {"tasks", "average"}}``). Every report says in ``split`` what ``tasks`` was scored
    on (the task pool's ``split``, else ``test``). With
    ``predictions`` the report holds ``predictions`` (``{split: {task: {"predicted", "target"}}}``)
    for the tasks whose pool reported them (see :class:`~fusionbench_core.protocols.Predictions`).

    With ``write`` the report (and the fused model with ``config.save_model``) lands in the
    output directory, each file written to a temporary name and renamed when complete. A model
    directory that exists and is not empty is refused before anything runs, unless
    ``config.overwrite``; then only the files the pool writes are replaced.
    """
    host = host or get_host()
    output = (config.output or default_output_dir(config)) if write else None
    if output is not None and config.save_model:
        check_output_dir(output / MODEL_DIR, overwrite=config.overwrite)
    algorithm = instantiate(host, "method", config.method)
    modelpool = instantiate(host, "modelpool", config.modelpool, seed=config.seed)
    taskpool = instantiate(host, "taskpool", config.taskpool, seed=config.seed)
    bind_taskpool(taskpool, modelpool)
    check_run_needs(host, config, algorithm, modelpool, taskpool)
    saves_fused = _saves_fused(algorithm)
    if output is not None and config.save_model and not saves_fused and getattr(modelpool, "save_model", None) is None:
        raise ConfigError(f"model pool '{config.modelpool.name}' cannot save models (--save-model)")
    splits = check_splits(taskpool, config.taskpool.name, splits)
    info = RunInfo(config, algorithm, modelpool, taskpool, output)
    host.call_hook("run_started", run=info)

    seed_everything(config.seed)
    if hasattr(algorithm, "seed"):
        algorithm.seed = config.seed
    start = time.perf_counter()
    fused = algorithm.run(modelpool)
    fused_at = time.perf_counter()
    report = score_and_report(config, algorithm, taskpool, fused, host, info, splits=splits,
                              predictions=predictions, started=start, fused_at=fused_at)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        if config.save_model:
            model_dir = output / MODEL_DIR
            tmp = temporary_dir_for(model_dir)
            try:
                if saves_fused:
                    algorithm.save_fused(fused, tmp)
                else:
                    modelpool.save_model(fused, tmp)
                install_dir(tmp, model_dir, overwrite=config.overwrite)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            report["model_dir"] = str(model_dir)
        report["output"] = str(output)
        write_json_atomic(output / REPORT_FILE, {k: v for k, v in report.items() if k != "predictions"})
    host.call_hook("run_finished", run=info, report=report)
    return report


def declared_groups(taskpool: Any) -> dict[str, list[str]]:
    """The task groups a task pool declares (optional ``task_groups``: name → task names), else ``{}``."""
    groups = getattr(taskpool, "task_groups", None)
    return {str(name): list(tasks) for name, tasks in dict(groups or {}).items()}


def group_averages(tasks: dict[str, dict[str, float]], groups: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per group: its tasks and the mean of each metric over those of them that were scored."""
    from .protocols import EvaluationReport

    out: dict[str, dict[str, Any]] = {}
    for name, members in groups.items():
        scored = {task: tasks[task] for task in members if task in tasks}
        out[name] = {"tasks": list(scored), "average": EvaluationReport(scored).average}
    return out


def check_splits(taskpool: Any, name: str, splits: Iterable[str]) -> list[str]:
    """The extra ``splits`` asked of ``taskpool`` (duplicates dropped), refused when it cannot score them."""
    splits = list(dict.fromkeys(splits))
    if splits and not isinstance(taskpool, ScoresSplits):
        raise ConfigError(f"task pool '{name}' cannot score split '{splits[0]}' "
                          f"(it offers no evaluate_split; see docs/experiments.md)")
    for split in splits:
        if split not in taskpool.splits:
            raise ConfigError(f"task pool '{name}' cannot score split '{split}' "
                              f"(it scores: {', '.join(taskpool.splits)})")
    return splits


def score_and_report(config: RunConfig, algorithm: Any, taskpool: Any, fused: Any, host: PluginHost, info: RunInfo,
                     *, splits: list[str], predictions: bool, started: float, fused_at: float) -> dict[str, Any]:
    """Score ``fused`` on the task pool (its own split, then ``splits``) and build the run's report.

    ``started`` and ``fused_at`` are the ``time.perf_counter()`` readings before and after the
    fusion; the cost block counts from them. Shared by :func:`execute` and the λ-sweep path of
    ``fb sweep`` (:mod:`fusionbench_core.experiments.reuse`), so both report alike.
    """
    main_split = getattr(taskpool, "split", "test")
    evaluation = taskpool.evaluate(fused)
    done = time.perf_counter()
    by_split = {main_split: evaluation}
    for split in splits:
        if split not in by_split:
            by_split[split] = taskpool.evaluate_split(fused, split)
    extra_done = time.perf_counter()

    requirement = getattr(algorithm, "requirement", Requirement.DATA_FREE)
    settings = algorithm.settings if isinstance(algorithm, BaseAlgorithm) else dict(config.method.options)
    cost = {
        "wall_s": round(done - started, 3),
        "fuse_s": round(fused_at - started, 3),
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
    groups = declared_groups(taskpool)
    if groups:
        report["groups"] = group_averages(evaluation.tasks, groups)
    # What ``tasks`` scored: the result store files the run under it (a validation run is no test run).
    report["split"] = main_split
    if splits:
        cost["extra_eval_s"] = round(extra_done - done, 3)
        report["splits"] = {split: {"tasks": result.tasks, "average": result.average}
                            for split, result in by_split.items()}
        for split, result in by_split.items():
            if groups:
                report["splits"][split]["groups"] = group_averages(result.tasks, groups)
    if predictions:
        report["predictions"] = {
            split: {task: {"predicted": list(p.predicted), "target": list(p.target)}
                    for task, p in getattr(result, "predictions", {}).items()}
            for split, result in by_split.items()
        }
    return report


def evaluate_models(modelpool: ComponentSpec, taskpool: ComponentSpec, *, model_dir: Path | None = None,
                    model_names: Iterable[str] = (), host: PluginHost | None = None,
                    seed: int | None = None) -> dict[str, dict[str, Any]]:
    """The ``fb eval`` program: score a saved model directory, or models of the pool, on a task pool.

    Returns ``{label: {"tasks": ..., "average": ...}}``: the directory's path for ``model_dir``,
    else each requested model name (default: the pretrained model, when there is one, then every
    fine-tuned model). ``seed`` is the run seed a seeded pool follows (:func:`seed_bound`).
    """
    host = host or get_host()
    pool = instantiate(host, "modelpool", modelpool, seed=seed)
    tasks = instantiate(host, "taskpool", taskpool, seed=seed)
    bind_taskpool(tasks, pool)
    results: dict[str, dict[str, Any]] = {}
    if model_dir is not None:
        fused = load_fused(host, pool, Path(model_dir))
        if fused is None:
            fused = load_checkpoint(pool, Path(model_dir), pool_name=modelpool.name)
        results[str(model_dir)] = tasks.evaluate(fused).to_dict()
        return results
    names = list(model_names) or ([PRETRAINED] if pool.has_pretrained else []) + list(pool.model_names)
    known = ([PRETRAINED] if pool.has_pretrained else []) + list(pool.model_names)
    for name in names:
        if name not in known:
            raise UnknownComponentError("model", name, known, owner=f"model pool '{modelpool.name}'")
    for name in names:
        results[name] = tasks.evaluate(pool.load_model(name)).to_dict()
    return results


def load_checkpoint(pool: Any, path: Path, *, pool_name: str | None = None) -> Any:
    """The pool's model carrying the checkpoint at ``path`` (a model directory or a weights file).

    A checkpoint that cannot be read (truncated, not a checkpoint) or that does not fit the pool's
    architecture (missing or foreign tensors, other shapes) is a one-line :class:`ModelLoadError`
    naming the file and the first thing wrong, instead of torch's multi-line report.
    """
    from .engine.sources import open_source
    from .errors import FusionBenchError, ModelLoadError

    name = pool_name or getattr(pool, "name", "?")
    try:
        source = open_source(path)
        state = {key: source.get(key) for key in source.keys()}
    except FusionBenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors, pickle and OS errors name no file
        raise ModelLoadError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: {_first_line(exc)}); "
                             "is it complete?") from exc
    try:
        return pool.build_model(state)
    except FusionBenchError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        reason = checkpoint_mismatch(state, pool) or _torch_detail(exc)
        raise ModelLoadError(f"checkpoint '{path}' does not fit model pool '{name}': {reason}") from exc


def checkpoint_mismatch(state: dict[str, Any], pool: Any) -> str | None:
    """How ``state`` differs from the pool's own model (its pretrained one, else its first): the first
    tensor of another shape, else the tensors missing and foreign; ``None`` when the names do not meet."""
    try:
        reference = pool.tensors(PRETRAINED if pool.has_pretrained else list(pool.model_names)[0])
        expected = {key: tuple(reference.info(key).shape) for key in reference.keys()}
    except Exception:  # noqa: BLE001 - a pool that cannot say: the caller falls back on torch's message
        return None
    common = [key for key in expected if key in state]
    for key in common:
        got = tuple(getattr(state[key], "shape", ()))
        if got != expected[key]:
            return (f"tensor '{key}' has shape {list(got)}, the pool's model has {list(expected[key])} "
                    "(another architecture or size)")
    missing = [key for key in expected if key not in state]
    foreign = [key for key in state if key not in expected]
    if not common:
        return (f"none of its {len(state)} tensors is the pool's (its first: '{next(iter(state), '')}', the pool's "
                f"first: '{next(iter(expected), '')}'): another architecture")
    if missing or foreign:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the pool's {len(expected)} tensors missing (first: '{missing[0]}')")
        if foreign:
            parts.append(f"{len(foreign)} tensors the pool's model lacks (first: '{foreign[0]}')")
        return "; ".join(parts)
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0].strip()


def _torch_detail(exc: BaseException) -> str:
    """The first specific line of an exception (torch puts the details below a header line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].lower().startswith("error(s) in loading state_dict"):
        return lines[1].rstrip(".")
    return lines[0] if lines else type(exc).__name__


def _saves_fused(algorithm: Any) -> bool:
    from .protocols import SavesFusedModels

    return isinstance(algorithm, SavesFusedModels)


def load_fused(host: PluginHost, modelpool: Any, model_dir: Path) -> Any:
    """The model of a directory a method saved itself (it holds :data:`~.protocols.STRUCTURE_FILE`), else None.

    The file's ``"method"`` names the registered method whose ``load_fused(modelpool, model_dir)`` rebuilds it.
    """
    from .protocols import STRUCTURE_FILE

    path = model_dir / STRUCTURE_FILE
    if not path.is_file():
        return None
    try:
        method = json.loads(path.read_text()).get("method")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"'{path}' is not a JSON object naming its method") from exc
    if not isinstance(method, str):
        raise ConfigError(f"'{path}' names no method (its \"method\" key)")
    loader = getattr(host.registry("method").entry(method).load(), "load_fused", None)
    if loader is None:
        raise ConfigError(f"method '{method}' cannot load the model saved in '{model_dir}' (no load_fused)")
    return loader(modelpool, model_dir)


# -- output directories ------------------------------------------------------------------------


def check_output_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse an output directory that exists and is not empty, unless ``overwrite``.

    Also refuses a path that exists and is not a directory, with or without ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output '{path}' exists and is not a directory")
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"output directory '{path}' exists and is not empty; pass --overwrite to replace fb's files in it")


def temporary_dir_for(path: Path) -> Path:
    """A fresh, empty directory next to ``path`` (same file system, so renames are atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                   "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")
"""Checkpoint file names: a new output removes those of an older one that it does not rewrite."""


def install_dir(tmp: Path, target: Path, *, overwrite: bool) -> list[str]:
    """Move the complete output in ``tmp`` to ``target``, file by file with ``os.replace``.

    When ``target`` is missing (or empty) the whole directory is renamed into place. Otherwise
    (only with ``overwrite``) each file of ``tmp`` replaces its namesake atomically: weight shards
    first, then the file that names them (the index or ``model.safetensors``), then stale checkpoint
    files of the older output, then the rest. Files in ``target`` that fb did not write this time
    and that are not checkpoint files (a user's notes, other outputs) stay. Returns the names moved.
    """
    tmp, target = Path(tmp), Path(target)
    names = sorted(p.name for p in tmp.iterdir())
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(tmp, target)
        return names
    check_output_dir(target, overwrite=overwrite)
    entry = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"}
    weights = [n for n in names if _is_weight_file(n)]
    ordered = [n for n in weights if n not in entry] + [n for n in weights if n in entry]
    for name in ordered:
        os.replace(tmp / name, target / name)
    for stale in sorted(target.iterdir()):
        if stale.is_file() and _is_weight_file(stale.name) and stale.name not in names:
            stale.unlink()
    for name in names:
        if name not in weights:
            if (target / name).is_dir() and not (tmp / name).is_dir():
                raise ConfigError(f"output '{target / name}' is a directory; fb would write a file there")
            if (tmp / name).is_dir() and (target / name).exists():
                install_dir(tmp / name, target / name, overwrite=True)
            else:
                os.replace(tmp / name, target / name)
    return names


def _is_weight_file(name: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in WEIGHT_PATTERNS)


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
