"""``fb sweep``: methods × hyperparameter grids × seeds × suites, one run per cell, resumable.

A sweep file::

    name: lambda-sweep                 # optional label stored with every run
    methods:
      task_arithmetic: {scaling_factor: [0.1, 0.3, 0.5]}   # a list is a grid axis
      ties: {scaling_factor: [0.3, 0.5], density: 0.2}      # a scalar is fixed
      simple_average: {}
    seeds: [0, 1, 2]
    suites:
      - tiny                                               # model pool = task pool = tiny
      - {modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}
    select_on: validation              # or test; the command line's --select-on wins
    reference: true                    # also score the pretrained and each fine-tuned model

Each cell runs through :func:`fusionbench_core.run.execute` (nothing is written to ``fb-runs``), or,
for a λ-linear method (task arithmetic, TIES), through the λ-group path of :mod:`.reuse`, which
builds the pools and the task vector once for every λ; either way a cell is recorded in the result
store in one transaction once it is complete, by this process alone (:mod:`.executors`: serial, or Ray). Its key
(:func:`cell_key`) hashes the method and its parsed hyperparameters (defaults included), both
pools' names and parsed options, the seed, the splits scored, the pools' fingerprints
(:class:`~fusionbench_core.protocols.Fingerprinted`) and the code version (:func:`code_version`).
A cell whose key is stored is skipped, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import inspect
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ComponentSpec, RunConfig
from ..errors import ConfigError

__all__ = ["Cell", "Job", "Outcome", "Suite", "SweepSpec", "cell_key", "check_spec", "code_version", "load_spec",
           "plan_cells", "plan_jobs", "run_job", "run_key", "run_sweep"]

SPEC_KEYS = ("name", "methods", "seeds", "suites", "select_on", "reference")
SELECT_ON = ("validation", "test")
KEY_FORMAT = 1
"""Bumped when the contents of a cell key change meaning."""


@dataclass
class Suite:
    """A model pool and the task pool its fused models are scored on."""

    modelpool: ComponentSpec
    taskpool: ComponentSpec

    @property
    def label(self) -> str:
        """``modelpool`` when both share a name and carry no options, else ``modelpool→taskpool`` with options."""
        def text(spec: ComponentSpec) -> str:
            opts = ",".join(f"{k}={v}" for k, v in sorted(spec.options.items()))
            return spec.name + (f"[{opts}]" if opts else "")

        mp, tp = text(self.modelpool), text(self.taskpool)
        return mp if mp == tp else f"{mp}→{tp}"


@dataclass
class Cell:
    """One run of a sweep: a method with one point of its grid, on one suite, with one seed."""

    method: str
    hyperparameters: dict[str, Any]
    suite: Suite
    seed: int
    key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    """The method's parsed hyperparameters, defaults included (filled by :func:`plan_cells`)."""
    payload: dict[str, Any] = field(default_factory=dict)
    """What :attr:`key` hashes (stored with the run as ``report["cell"]``)."""

    def config(self) -> RunConfig:
        """The run configuration of this cell (fresh copies of every spec)."""
        return RunConfig(ComponentSpec(self.method, dict(self.hyperparameters)),
                         copy.deepcopy(self.suite.modelpool), copy.deepcopy(self.suite.taskpool), self.seed)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"key": self.key, "method": self.method, "hyperparameters": self.settings or self.hyperparameters,
                "modelpool": {"name": self.suite.modelpool.name, **self.suite.modelpool.options},
                "taskpool": {"name": self.suite.taskpool.name, **self.suite.taskpool.options},
                "suite": self.suite.label, "seed": self.seed}


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    name: str
    methods: list[tuple[str, dict[str, list[Any]]]]
    seeds: list[int]
    suites: list[Suite]
    select_on: str = "validation"
    reference: bool = True

    def cells(self) -> list[Cell]:
        """Every cell, suite by suite, method by method, grid point by grid point (axes in file order), seed by seed."""
        out = []
        for suite in self.suites:
            for method, grid in self.methods:
                axes = list(grid)
                for values in itertools.product(*(grid[a] for a in axes)):
                    for seed in self.seeds:
                        out.append(Cell(method, dict(zip(axes, values)), suite, seed))
        return out

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits each cell scores: validation and test under validation selection, else the pool's own."""
        return ("validation", "test") if self.select_on == "validation" else ()


class _UniqueKeyLoader:
    """A YAML safe loader that refuses a mapping key written twice (PyYAML keeps the last one silently)."""

    @staticmethod
    def make() -> Any:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = loader.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise ConfigError(f"line {key_node.start_mark.line + 1}: key '{key}' is written twice")
                seen.add(key)
            return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
        return Loader


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _twice(values: list[Any]) -> Any:
    """The first value of ``values`` that equals an earlier one (``0.3`` and ``0.30`` are equal), else a sentinel."""
    seen: list[Any] = []
    for value in values:
        if any(type(value) is type(old) and value == old for old in seen):
            return value
        seen.append(value)
    return _NONE


_NONE = object()


def load_spec(path: Path, *, select_on: str | None = None) -> SweepSpec:
    """Read and check a sweep file; ``select_on`` (from ``--select-on``) overrides the file's.

    Everything that can be checked without the plugins is checked here, each with a one-line error
    naming the file and the key: keys written twice, grid values listed twice, seeds that are not
    distinct integers, values of the wrong type, a suite listed twice. :func:`check_spec` checks
    the names (methods, pools) and hyperparameters against what is installed.
    """
    import yaml

    where = f"sweep file '{path}'"
    try:
        data = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader.make()) or {}
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{where}{f' line {mark.line + 1}' if mark else ''}: not valid YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key in data:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(SPEC_KEYS)})")
    methods = data.get("methods")
    if isinstance(methods, list):
        if all(isinstance(m, str) for m in methods):
            repeated = _twice(methods)
            if repeated is not _NONE:
                raise ConfigError(f"{where}: 'methods' lists '{repeated}' twice")
            methods = {m: {} for m in methods}
        else:
            methods = None
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"{where}: 'methods' must map each method to its grid, "
                          "e.g. {ties: {scaling_factor: [0.3, 0.5]}}")
    parsed_methods = []
    for name, grid in methods.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}: method names must be text, got {name!r}")
        grid = grid or {}
        if not isinstance(grid, dict):
            raise ConfigError(f"{where}: the grid of method '{name}' must be a mapping of hyperparameters")
        axes = {}
        for hp, values in grid.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ConfigError(f"{where}: hyperparameter '{name}.{hp}' has an empty list of values")
            repeated = _twice(values)
            if repeated is not _NONE:
                raise ConfigError(f"{where}: hyperparameter '{name}.{hp}' lists {repeated!r} twice")
            axes[str(hp)] = values
        parsed_methods.append((name, axes))
    seeds = data.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds:
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of distinct integers")
    for seed in seeds:
        if not _is_integer(seed):
            raise ConfigError(f"{where}: 'seeds' must be integers, got {seed!r}")
    repeated = _twice(seeds)
    if repeated is not _NONE:
        raise ConfigError(f"{where}: 'seeds' lists {repeated} twice")
    suites_value = data.get("suites")
    if isinstance(suites_value, (str, dict)):
        suites_value = [suites_value]
    if not isinstance(suites_value, list) or not suites_value:
        raise ConfigError(f"{where}: 'suites' must list suite names or {{modelpool: ..., taskpool: ...}} mappings")
    suites: list[Suite] = []
    for i, item in enumerate(suites_value):
        if isinstance(item, dict) and "modelpool" in item:
            unknown = set(item) - {"modelpool", "taskpool"}
            if unknown:
                raise ConfigError(f"{where}: suites[{i}]: unknown key '{sorted(unknown)[0]}' "
                                  "(known: modelpool, taskpool)")
            mp = ComponentSpec.parse(item["modelpool"], f"{where}: suites[{i}].modelpool")
            tp = ComponentSpec.parse(item.get("taskpool", mp.name), f"{where}: suites[{i}].taskpool")
        else:
            mp = ComponentSpec.parse(item, f"{where}: suites[{i}]")
            tp = ComponentSpec(mp.name, dict(mp.options))
        suite = Suite(mp, tp)
        if any(s == suite for s in suites):
            raise ConfigError(f"{where}: suites[{i}]: suite '{suite.label}' is listed twice")
        suites.append(suite)
    chosen = select_on or data.get("select_on", "validation")
    if not isinstance(chosen, str) or chosen not in SELECT_ON:
        raise ConfigError(f"{where}: select_on must be one of {', '.join(SELECT_ON)}, got {chosen!r}")
    name = data.get("name")
    if name is not None and not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ConfigError(f"{where}: 'name' must be text, got {name!r}")
    reference = data.get("reference", True)
    if not isinstance(reference, bool):
        raise ConfigError(f"{where}: 'reference' must be true or false, got {reference!r}")
    return SweepSpec(str(name or Path(path).stem), parsed_methods, seeds, suites, chosen, reference)


def check_spec(spec: SweepSpec, host: Any) -> None:
    """Check every name and hyperparameter of ``spec`` against what is installed, building no pool.

    Methods, model pools and task pools must be registered, each grid point's hyperparameters parse
    and pass the method's checks, and no two grid points of a method are the same setting once
    parsed (``0.3`` and ``"0.3"``); errors are one line. :func:`plan_cells` calls it before it builds
    a pool, so a typo in the last suite does not wait for the first suite's experts to be trained.
    """
    from ..run import instantiate, parse_options

    for suite in spec.suites:
        for kind, pool in (("modelpool", suite.modelpool), ("taskpool", suite.taskpool)):
            factory = host.registry(kind).entry(pool.name).load()
            parse_options(kind, ComponentSpec(pool.name, dict(pool.options)), factory)
    for method, grid in spec.methods:
        axes = list(grid)
        seen: dict[str, dict[str, Any]] = {}
        for values in itertools.product(*(grid[a] for a in axes)):
            algorithm = instantiate(host, "method", ComponentSpec(method, dict(zip(axes, values))))
            settings = getattr(algorithm, "settings", None) or dict(zip(axes, values))
            text = json.dumps(settings, sort_keys=True, default=str)
            if text in seen:
                point = ", ".join(f"{k}={v}" for k, v in dict(zip(axes, values)).items())
                raise ConfigError(f"method '{method}' of sweep '{spec.name}' lists the same setting twice: "
                                  f"{point} (the grid values parse to equal hyperparameters)")
            seen[text] = settings


# -- keys --------------------------------------------------------------------------------------


def _source_digest(obj: Any) -> str | None:
    try:
        path = inspect.getsourcefile(obj if inspect.isclass(obj) or inspect.ismodule(obj) else type(obj))
    except TypeError:
        return None
    if not path or not os.path.exists(path):
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def code_version(host: Any, *components: Any) -> dict[str, Any]:
    """What the code of a cell is: installed distribution versions and the source digests of its components.

    The versions are Python's, fusionbench-core's, torch's (when installed, imported or not) and every
    loaded plugin distribution's; ``sources`` digests the files defining ``components`` (the method and
    pool classes) and the run program, so editing a method's file changes its cells' keys even
    without a version bump.
    """
    from .. import run as run_module
    from ..run import versions

    found = dict(versions(host))
    try:
        found["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pass
    sources = {"fusionbench_core.run": _source_digest(run_module)}
    for component in components:
        cls = component if inspect.isclass(component) else type(component)
        sources[f"{cls.__module__}:{cls.__qualname__}"] = _source_digest(cls)
    return {"versions": dict(sorted(found.items())), "sources": dict(sorted(sources.items()))}


def cell_key(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (what :func:`plan_cells` puts in a cell's key)."""
    text = json.dumps({"key_format": KEY_FORMAT, **payload}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def pool_fingerprint(pool: Any) -> str | None:
    """The pool's ``fingerprint()`` when it offers :class:`~fusionbench_core.protocols.Fingerprinted`, else ``None``."""
    from ..protocols import Fingerprinted

    return pool.fingerprint() if isinstance(pool, Fingerprinted) else None


@dataclass
class SuiteInputs:
    """What the keys of one suite's cells need: parsed pool options, fingerprints, pool classes."""

    modelpool_options: dict[str, Any]
    taskpool_options: dict[str, Any]
    fingerprints: dict[str, str | None]
    classes: tuple[Any, Any]
    seeded: bool = False
    """A pool follows the run's seed (:func:`fusionbench_core.run.seed_bound`): inputs differ per seed."""


def inspect_suite(suite: Suite, host: Any, seed: int | None = None) -> SuiteInputs:
    """Build the suite's pools once to parse their options and read their fingerprints (for ``seed``)."""
    from ..run import instantiate, seed_bound

    mp_spec, tp_spec = copy.deepcopy(suite.modelpool), copy.deepcopy(suite.taskpool)
    modelpool = instantiate(host, "modelpool", mp_spec, seed=seed)
    taskpool = instantiate(host, "taskpool", tp_spec, seed=seed)
    seeded = any(seed_bound(host.registry(kind).entry(spec.name).load(), spec.options)
                 for kind, spec in (("modelpool", mp_spec), ("taskpool", tp_spec)))
    return SuiteInputs(mp_spec.options, tp_spec.options,
                       {"modelpool": pool_fingerprint(modelpool), "taskpool": pool_fingerprint(taskpool)},
                       (type(modelpool), type(taskpool)), seeded)


def suite_inputs_by_seed(suite: Suite, seeds: list[int], host: Any) -> dict[int, SuiteInputs]:
    """:func:`inspect_suite` for each seed; the pools are built once when no pool follows the seed.

    Building a pool of a suite that trains its own experts trains what is missing (every seed's
    experts here, before the first cell runs, in this process, ``--dry-run`` included).
    """
    first = inspect_suite(suite, host, seeds[0])
    if not first.seeded:
        return {seed: first for seed in seeds}
    return {seeds[0]: first, **{seed: inspect_suite(suite, host, seed) for seed in seeds[1:]}}


def cell_code(host: Any, method: str, algorithm: Any, classes: tuple[Any, ...]) -> dict[str, Any]:
    """The ``code`` part of a cell key: :func:`code_version` of the method and pool classes.

    For a method that ``fb sweep`` runs through the λ-group path (:func:`.reuse.lambda_axis`), the
    digest of :mod:`fusionbench_core.experiments.reuse` is included too, so editing it reruns those cells.
    """
    from . import reuse

    code = code_version(host, type(algorithm), *classes)
    if reuse.lambda_axis(method, algorithm) is not None:
        code["sources"] = dict(sorted({**code["sources"], "fusionbench_core.experiments.reuse": _source_digest(reuse)}
                                      .items()))
    return code


def cell_payload(method: str, settings: dict[str, Any], suite: Suite, suite_inputs: SuiteInputs, seed: int,
                 splits: tuple[str, ...] | list[str], algorithm: Any, host: Any) -> dict[str, Any]:
    """What a cell's key hashes (see the module docstring); ``fb run`` keys its stored run the same way."""
    return {
        "method": method, "hyperparameters": settings,
        "modelpool": {"name": suite.modelpool.name, **suite_inputs.modelpool_options},
        "taskpool": {"name": suite.taskpool.name, **suite_inputs.taskpool_options},
        "seed": seed, "splits": list(splits), "inputs": suite_inputs.fingerprints,
        "code": cell_code(host, method, algorithm, suite_inputs.classes),
    }


def run_key(config: RunConfig, host: Any, *, splits: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """``(key, payload)`` of one ``fb run`` configuration, as :func:`plan_cells` keys a cell of a sweep.

    With no ``splits`` the key is that of the same cell in a sweep with ``select_on: test``, so such
    a sweep finds the run ``fb run`` recorded and skips it.
    """
    from ..run import instantiate

    suite = Suite(copy.deepcopy(config.modelpool), copy.deepcopy(config.taskpool))
    suite_inputs = inspect_suite(suite, host, config.seed)
    algorithm = instantiate(host, "method", ComponentSpec(config.method.name, dict(config.method.options)))
    settings = getattr(algorithm, "settings", None) or dict(config.method.options)
    payload = cell_payload(config.method.name, settings, suite, suite_inputs, config.seed, splits, algorithm, host)
    return cell_key(payload), payload


def plan_cells(spec: SweepSpec, host: Any) -> tuple[list[Cell], list[dict[str, Any]]]:
    """Check every cell (hyperparameters parsed and range-checked) and compute its key.

    Returns the cells and the reference jobs (when ``spec.reference``: the pretrained model and
    each fine-tuned model scored on the suite's task pool, keyed like cells; one per suite, or one
    per suite and seed when a pool follows the seed).
    """
    from ..run import instantiate

    check_spec(spec, host)
    inputs: dict[int, dict[int, SuiteInputs]] = {}
    for i, suite in enumerate(spec.suites):
        inputs[i] = suite_inputs_by_seed(suite, spec.seeds, host)
    cells = spec.cells()
    for cell in cells:
        suite_inputs = inputs[spec.suites.index(cell.suite)][cell.seed]
        algorithm = instantiate(host, "method", ComponentSpec(cell.method, dict(cell.hyperparameters)))
        cell.settings = getattr(algorithm, "settings", None) or dict(cell.hyperparameters)
        cell.payload = cell_payload(cell.method, cell.settings, cell.suite, suite_inputs, cell.seed, spec.splits,
                                    algorithm, host)
        cell.key = cell_key(cell.payload)
    references = []
    if spec.reference:
        for i, suite in enumerate(spec.suites):
            seeded = inputs[i][spec.seeds[0]].seeded
            for seed in (spec.seeds if seeded else [None]):
                suite_inputs = inputs[i][spec.seeds[0] if seed is None else seed]
                base = {"modelpool": {"name": suite.modelpool.name, **suite_inputs.modelpool_options},
                        "taskpool": {"name": suite.taskpool.name, **suite_inputs.taskpool_options},
                        "inputs": suite_inputs.fingerprints, "code": code_version(host, *suite_inputs.classes),
                        **({"seed": seed} if seed is not None else {})}
                references.append({"suite": suite, "seed": seed,
                                   "keys": {kind: cell_key({"reference": kind, **base})
                                            for kind in ("pretrained", "individual")}})
    return cells, references


# -- running -----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep did, cell by cell (``status``: ``done``, ``stored``, ``left``, or ``failed`` with its
    one-line ``error`` when the sweep kept going past a failing cell)."""

    rows: list[dict[str, Any]]
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        """How many cells have each status (``failed`` only when some did)."""
        out = {"done": 0, "stored": 0, "left": 0}
        for row in self.rows:
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out


class SweepProgress:
    """Cells done / running / left and the ETA on stderr: a rich bar on a terminal, else one line per cell."""

    def __init__(self, total: int, already: int):
        self.total, self.done, self.running = total, already, 0
        self.started = time.perf_counter()
        self.ran = 0
        self.enabled = os.environ.get("FUSIONBENCH_PROGRESS", "1") != "0"
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]sweep"), BarColumn(),
                                TextColumn("{task.fields[done]} done · {task.fields[running]} running · "
                                           "{task.fields[left]} left"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(file=sys.stderr, stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=total, completed=already, done=already, running=0,
                                          left=total - already)

    def eta(self) -> float | None:
        """Seconds left at the mean pace of the cells run so far."""
        if not self.ran:
            return None
        return (time.perf_counter() - self.started) / self.ran * (self.total - self.done)

    def start(self, cell: Cell | None = None, running: int = 1) -> None:
        """Cells start: ``running`` of them are now computing (a λ group, or Ray tasks in flight)."""
        self.running = running
        if self.bar is not None:
            self.bar.update(self.task, running=running, left=self.total - self.done - running)

    def finish(self, cell: Cell | None, summary: str) -> None:
        """A cell is recorded."""
        self.running, self.done, self.ran = max(0, self.running - 1), self.done + 1, self.ran + 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, done=self.done, running=self.running,
                            left=self.total - self.done - self.running)
        elif self.enabled:
            eta = self.eta()
            eta_text = f", ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
            print(f"[{self.done}/{self.total}] {summary}{eta_text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.stop()


def _hp_text(settings: dict[str, Any]) -> str:
    return "".join(f" {k}={v}" for k, v in settings.items())


@dataclass
class Job:
    """One unit of work of a sweep: a suite's references, one cell, or a λ group of cells.

    Plain data (picklable), so a Ray worker can run it: :func:`run_job` yields its outcomes and the
    driver alone writes them to the store.
    """

    kind: str
    """``reference``, ``cell`` or ``lambda``."""
    cells: list[Cell] = field(default_factory=list)
    suite: Suite | None = None
    keys: dict[str, str] = field(default_factory=dict)
    """Reference jobs: ``{"pretrained": key, "individual": key}`` of the references still to record."""
    seed: int | None = None
    """Reference jobs: the seed a seeded pool follows (``None``: the pools follow no seed)."""
    axis: str | None = None
    splits: tuple[str, ...] = ()
    gpus: float = 0.0
    """GPUs a Ray executor requests for this job (see :func:`wants_gpu`)."""
    threads: int | None = None
    """torch's intra-op threads for a Ray worker: the driver's, so that sums reduce in the same order
    and the stored metrics equal the serial executor's to the last bit."""
    keep_going: bool = False
    """An error fails the job's unfinished items (:attr:`Outcome.error`) instead of being raised."""

    @property
    def label(self) -> str:
        """A short description for progress lines."""
        if self.kind == "reference":
            return f"references on {self.suite.label}" + (f" seed={self.seed}" if self.seed is not None else "")
        cell = self.cells[0]
        return f"{cell.method} on {cell.suite.label} seed={cell.seed}" + (
            f" ({len(self.cells)} values of {self.axis})" if self.kind == "lambda" else "")


@dataclass
class Outcome:
    """One finished item of a job: the key it is stored under, its kind and report (``None``: nothing to record).

    ``error`` is the one-line error of an item that failed (only for a job with ``keep_going``).
    """

    key: str
    kind: str
    report: dict[str, Any] | None
    error: str | None = None


def wants_gpu(host: Any, cell: Cell) -> bool:
    """Whether a cell's method or pools want a GPU: a class says ``wants_gpu = True``
    or declares a ``device`` option."""
    for kind, name in (("method", cell.method), ("modelpool", cell.suite.modelpool.name),
                       ("taskpool", cell.suite.taskpool.name)):
        try:
            factory = host.registry(kind).entry(name).load()
        except Exception:  # noqa: BLE001 - planning already checked the names; stay conservative
            continue
        declared = list(getattr(factory, "options", None) or ()) + list(getattr(factory, "hyperparameters", None) or ())
        if getattr(factory, "wants_gpu", False) or any(getattr(opt, "name", None) == "device" for opt in declared):
            return True
    return False


def plan_jobs(spec: SweepSpec, cells: list[Cell], references: list[dict[str, Any]], stored: set[str], host: Any,
              *, reuse: bool = True) -> list[Job]:
    """The jobs of the cells and references not in ``stored``: references first, then cells in order.

    With ``reuse``, cells of a λ-linear method (:func:`.reuse.lambda_axis`) that differ in λ alone
    form one ``lambda`` job (:func:`.reuse.group_cells`); every other cell is a job of its own.
    """
    from ..run import instantiate
    from .reuse import group_cells, lambda_axis

    jobs = [Job("reference", suite=ref["suite"], seed=ref.get("seed"),
                keys={k: v for k, v in ref["keys"].items() if v not in stored}) for ref in references]
    jobs = [job for job in jobs if job.keys]
    todo = [cell for cell in cells if cell.key not in stored]
    axes: dict[str, str | None] = {}
    if reuse:
        for cell in todo:
            if cell.method not in axes:
                algorithm = instantiate(host, "method", ComponentSpec(cell.method, dict(cell.hyperparameters)))
                axes[cell.method] = lambda_axis(cell.method, algorithm)
    for group in group_cells(todo, axes):
        axis = axes.get(group[0].method)
        jobs.append(Job("lambda" if axis else "cell", cells=group, axis=axis, splits=tuple(spec.splits)))
    return jobs


def run_job(job: Job, host: Any = None, execute: Callable[..., dict[str, Any]] | None = None) -> Iterator[Outcome]:
    """Compute one job, yielding each outcome as soon as it is complete; writes nothing anywhere.

    With ``job.keep_going`` an exception fails the items not yet yielded, as outcomes with a one-line
    ``error``, and is not raised. ``execute`` replaces :func:`fusionbench_core.run.execute` for
    ``cell`` jobs (tests).
    """
    if not job.keep_going:
        yield from _job_outcomes(job, host, execute)
        return
    finished: set[str] = set()
    try:
        for outcome in _job_outcomes(job, host, execute):
            finished.add(outcome.key)
            yield outcome
    except Exception as exc:  # noqa: BLE001 - kept going on purpose: the error is reported per item
        yield from failed_items(job, exc, finished)


def failed_items(job: Job, exc: BaseException, finished: set[str]) -> list[Outcome]:
    """An outcome with ``exc``'s one-line error for each item of ``job`` whose key is not ``finished``."""
    items = ([(key, kind) for kind, key in job.keys.items()] if job.kind == "reference"
             else [(cell.key, "fused") for cell in job.cells])
    return [Outcome(key, kind, None, error=error_line(exc)) for key, kind in items if key not in finished]


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``: how a failed cell's error is shown and stored."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _job_outcomes(job: Job, host: Any, execute: Callable[..., dict[str, Any]] | None) -> Iterator[Outcome]:
    """The outcomes of one job, raising whatever its computation raises."""
    from ..plugins import get_host
    from ..run import evaluate_models
    from ..run import execute as run_execute

    host = host or get_host()
    if job.kind == "reference":
        suite = job.suite
        started = time.perf_counter()
        scores = evaluate_models(copy.deepcopy(suite.modelpool), copy.deepcopy(suite.taskpool), host=host,
                                 seed=job.seed)
        wall = round(time.perf_counter() - started, 3)
        for kind, key in job.keys.items():
            yield Outcome(key, kind, reference_report(kind, scores, suite, host, wall, seed=job.seed or 0))
    elif job.kind == "lambda":
        from .reuse import execute_lambda_group

        reports = execute_lambda_group([cell.config() for cell in job.cells], job.axis, host, splits=job.splits,
                                       predictions=True)
        for cell, report in zip(job.cells, reports):
            yield Outcome(cell.key, "fused", {**report, "cell": {"key": cell.key, **cell.payload}})
    else:
        execute = execute or run_execute
        for cell in job.cells:
            report = execute(cell.config(), host, write=False, splits=job.splits, predictions=True)
            yield Outcome(cell.key, "fused", {**report, "cell": {"key": cell.key, **cell.payload}})


def run_sweep(spec: SweepSpec, store: Any, *, host: Any = None, dry_run: bool = False,
              execute: Callable[..., dict[str, Any]] | None = None, executor: str = "serial", reuse: bool = True,
              address: str | None = None, num_cpus: int | None = None,
              gpus_per_cell: float | None = None, keep_going: bool = False,
              planned: tuple[list[Cell], list[dict[str, Any]]] | None = None) -> SweepResult:
    """Run every cell of ``spec`` not yet in ``store``, recording each in the store when complete.

    References (pretrained and individual models) come first, then the cells in :meth:`SweepSpec.cells`
    order (a λ group runs where its first cell stands). ``executor`` is ``serial`` (in this process)
    or ``ray`` (:mod:`.executors`: jobs run as Ray tasks; ``address``, ``num_cpus`` and
    ``gpus_per_cell`` are Ray's); either way this process alone writes the store.
    ``KeyboardInterrupt`` stops the sweep without recording an unfinished cell; the result then has
    ``interrupted`` set and the unfinished cells ``left``. ``reuse=False`` runs every cell through
    :func:`fusionbench_core.run.execute`; ``execute`` replaces that function (tests). With
    ``keep_going`` a failing cell (or reference) is marked ``failed`` with its one-line error, nothing
    is recorded for it (so the next run retries it), and the sweep goes on; otherwise the error is
    raised and ends the sweep. ``planned`` is what :func:`plan_cells` returned for ``spec`` (``fb sweep``
    plans before it opens the store, so that a bad sweep file leaves no store behind).
    """
    from ..plugins import get_host
    from .executors import get_executor

    run_jobs = get_executor(executor, address=address, num_cpus=num_cpus, gpus_per_cell=gpus_per_cell)
    host = host or get_host()
    cells, references = planned if planned is not None else plan_cells(spec, host)
    stored = store.keys()
    rows = []
    for ref in references:
        for kind, key in ref["keys"].items():
            rows.append({"key": key, "kind": kind, "method": f"_{kind}_", "hyperparameters": {},
                         "suite": ref["suite"].label, "seed": ref.get("seed"),
                         "status": "stored" if key in stored else "left"})
    for cell in cells:
        rows.append({**cell.describe(), "kind": "fused", "status": "stored" if cell.key in stored else "left"})
    result = SweepResult(rows)
    if dry_run:
        return result
    by_key = {row["key"]: row for row in rows}
    jobs = plan_jobs(spec, cells, references, stored, host, reuse=reuse)
    for job in jobs:
        job.keep_going = keep_going
    if executor == "ray":
        threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        for job in jobs:
            job.threads = threads
            if gpus_per_cell is None:
                job.gpus = 1.0 if job.cells and wants_gpu(host, job.cells[0]) else 0.0
    progress = SweepProgress(len(rows), sum(row["status"] == "stored" for row in rows))

    def still_needed(job: Job) -> bool:
        """Drop what another sweep recorded meanwhile (checked when a job is about to start)."""
        if job.kind == "reference":
            job.keys = {k: v for k, v in job.keys.items() if not store.has(v)}
            return bool(job.keys)
        for cell in [c for c in job.cells if store.has(c.key)]:
            by_key[cell.key]["status"] = "stored"
            progress.finish(cell, f"{cell.method}{_hp_text(cell.settings)} seed={cell.seed}: stored by another sweep")
        job.cells = [c for c in job.cells if by_key[c.key]["status"] != "stored"]
        return bool(job.cells)

    try:
        for outcome in run_jobs(jobs, host=host, execute=execute, still_needed=still_needed, progress=progress):
            row = by_key[outcome.key]
            if outcome.error is not None:
                row["status"], row["error"] = "failed", outcome.error
                seed = f" seed={row['seed']}" if row.get("seed") is not None else ""
                progress.finish(None, f"{row['method']}{_hp_text(row['hyperparameters'])} on {row['suite']}{seed}: "
                                      f"failed, {outcome.error}")
                continue
            if outcome.report is None:
                row["status"] = "stored"  # nothing to record (e.g. no pretrained model)
                continue
            if store.add(outcome.key, outcome.report, sweep=spec.name, kind=outcome.kind) is None:
                row["status"] = "stored"  # another sweep recorded it while this one computed it
                progress.finish(None, f"{row['method']}: stored by another sweep")
                continue
            row["status"] = "done"
            if outcome.kind != "fused":
                row["average"] = outcome.report["average"].get("accuracy")
                progress.finish(None, f"{outcome.kind} models on {row['suite']}")
                continue
            report = outcome.report
            row["test_accuracy"] = _split_accuracy(report, "test")
            row["validation_accuracy"] = _split_accuracy(report, "validation")
            row["wall_s"] = report.get("cost", {}).get("wall_s")
            acc = row["test_accuracy"]
            progress.finish(None, f"{row['method']}{_hp_text(row['hyperparameters'])} on {row['suite']} "
                                  f"seed={row['seed']}: test accuracy {acc:.4f}" if acc is not None
                            else f"{row['method']} done")
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        progress.close()
    return result


def _split_accuracy(report: dict[str, Any], split: str) -> float | None:
    if "splits" in report:
        return (report["splits"].get(split) or {}).get("average", {}).get("accuracy")
    return report.get("average", {}).get("accuracy") if split == "test" else None


def reference_report(kind: str, scores: dict[str, dict[str, Any]], suite: Suite, host: Any,
                     wall_s: float, seed: int = 0) -> dict[str, Any] | None:
    """The report of a reference run from :func:`fusionbench_core.run.evaluate_models` scores.

    ``pretrained``: the pretrained model on every task; ``individual``: each fine-tuned model on its
    own task (model names equal to task names). ``None`` when the suite has no such models.
    """
    from ..protocols import PRETRAINED, EvaluationReport
    from ..run import versions

    if kind == "pretrained":
        if PRETRAINED not in scores:
            return None
        tasks = scores[PRETRAINED]["tasks"]
    else:
        tasks = {name: result["tasks"][name] for name, result in scores.items()
                 if name != PRETRAINED and name in result["tasks"]}
        if not tasks:
            return None
    average = EvaluationReport(dict(tasks)).average
    return {"method": f"_{kind}_", "hyperparameters": {}, "requirement": "data-free",
            "modelpool": {"name": suite.modelpool.name, **suite.modelpool.options},
            "taskpool": {"name": suite.taskpool.name, **suite.taskpool.options},
            "tasks": tasks, "average": average, "cost": {"wall_s": wall_s}, "seed": seed,
            "versions": versions(host), "split": str(suite.taskpool.options.get("split", "test"))}


def iter_rows(result: SweepResult) -> Iterator[dict[str, Any]]:
    """The rows of a sweep result (for listings)."""
    yield from result.rows
