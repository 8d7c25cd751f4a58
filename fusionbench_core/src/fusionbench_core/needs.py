"""Which pools a method runs on: its declared needs against what each pool declares it provides.

A method declares its needs as :class:`~fusionbench_core.protocols.Capability` values
(:attr:`BaseAlgorithm.needs <fusionbench_core.protocols.BaseAlgorithm.needs>`, with ``data`` and ``pretrained``
implied by its requirement and ``needs_pretrained``). A model pool or task pool declares what it offers in its
registration, ``register(name, target, provides=[...], lacks={...})``: model pools the pool traits
(``data``, ``pretrained``, ``architecture``, ``layer-stack``, ``linear-modules``, ``permutation-spec``), task
pools ``class-logits`` when they score class logits; the optional ``lacks`` says why a capability is missing
(``{"linear-modules": "..."}``), for messages. Nothing here imports torch or a pool's module:
``fb methods show`` reads registrations only.

At run time :func:`check_needs` refuses a pool that lacks a need in one line naming the method and the pool.
What the protocols can tell of the pool object itself (data, a pretrained model, an architecture, the
number of models) is checked on the object; the rest is taken from the pool's declaration, and a pool that
declares nothing is left to the method's own checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError
from .protocols import CAPABILITY_TEXT, Capability, DataModelPool, DescribesArchitecture, method_needs

POOL_SIDE = (Capability.DATA, Capability.PRETRAINED, Capability.ARCHITECTURE, Capability.LAYER_STACK,
             Capability.LINEAR_MODULES, Capability.PERMUTATION_SPEC)
"""The capabilities a model pool's registration declares."""
TASKPOOL_SIDE = (Capability.CLASS_LOGITS,)
"""The capabilities a task pool's registration declares."""
ANY_POOL = (Capability.TWO_MODELS,)
"""Needs every pool can meet through its options (choosing two of its tasks); they do not rule a suite out."""


def declared(metadata: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The ``provides`` of a registration's metadata as a set of names, ``None`` when it declares none."""
    if not metadata or metadata.get("provides") is None:
        return None
    provides = metadata["provides"]
    return frozenset([provides] if isinstance(provides, str) else (str(item) for item in provides))


def reasons(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The optional ``lacks`` of a registration's metadata: capability name → why the pool lacks it."""
    lacks = (metadata or {}).get("lacks") or {}
    return {str(key): str(value) for key, value in dict(lacks).items()}


def _lacks(need: Capability, provides: frozenset[str] | None) -> bool:
    return provides is not None and need.value not in provides


def _refusal(method: str, need: Capability, role: str, pool: str, why: Mapping[str, str] | None) -> ConfigError:
    reason = (why or {}).get(need.value)
    return ConfigError(f"method '{method}' needs {CAPABILITY_TEXT[need]}, which {role} '{pool}' does not provide "
                       f"(capability '{need.value}'{': ' + reason if reason else ''})")


def check_needs(method: Any, modelpool: Any, taskpool: Any = None, *, method_name: str | None = None,
                provides: Iterable[str] | None = None, taskpool_provides: Iterable[str] | None = None,
                lacks: Mapping[str, str] | None = None, taskpool_lacks: Mapping[str, str] | None = None) -> None:
    """Raise a one-line :class:`ConfigError` naming ``method``, the pool and the first need the pool does not meet.

    ``provides`` and ``taskpool_provides`` are what the model pool's and the task pool's registrations declare
    (``None``: nothing declared, those needs are left to the method); ``lacks`` and ``taskpool_lacks`` say why
    a capability is missing, for the message. Nothing is loaded: a pool's ``architecture()`` is not called,
    its declaration says whether it has one layer stack.
    """
    name = method_name or getattr(method, "name", "") or type(method).__name__
    pool = getattr(modelpool, "name", modelpool)
    model_side = None if provides is None else frozenset(provides)
    task_side = None if taskpool_provides is None else frozenset(taskpool_provides)
    for need in method_needs(method):
        if need is Capability.DATA and not isinstance(modelpool, DataModelPool):
            requirement = getattr(method, "requirement", None)
            kind = f" ({requirement.value})" if hasattr(requirement, "value") else ""
            raise ConfigError(f"method '{name}' needs data{kind}, but model pool '{pool}' provides none")
        if need is Capability.PRETRAINED and not modelpool.has_pretrained:
            raise ConfigError(f"method '{name}' needs a pretrained model, but model pool '{pool}' has none")
        if need is Capability.ARCHITECTURE and not isinstance(modelpool, DescribesArchitecture):
            raise ConfigError(f"method '{name}' needs the model's architecture, but model pool '{pool}' "
                              "declares none (ModelPool.architecture())")
        if need is Capability.TWO_MODELS and len(modelpool.model_names) != 2:
            raise ConfigError(f"method '{name}' needs exactly 2 models, got {len(modelpool.model_names)} "
                              f"in model pool '{pool}'")
        if need is Capability.PERMUTATION_SPEC and callable(getattr(modelpool, "permutation_spec", None)):
            continue
        if need in (Capability.LAYER_STACK, Capability.LINEAR_MODULES, Capability.PERMUTATION_SPEC) \
                and _lacks(need, model_side):
            raise _refusal(name, need, "model pool", pool, lacks)
        if need is Capability.CLASS_LOGITS and taskpool is not None and _lacks(need, task_side):
            raise _refusal(name, need, "task pool", getattr(taskpool, "name", taskpool), taskpool_lacks)


def check_run_needs(host: Any, config: Any, algorithm: Any, modelpool: Any, taskpool: Any) -> None:
    """:func:`check_needs` for a run: the declarations come from the registrations ``config`` names."""
    model_entry = host.registry("modelpool").entry(config.modelpool.name)
    task_entry = host.registry("taskpool").entry(config.taskpool.name)
    check_needs(algorithm, modelpool, taskpool, method_name=config.method.name,
                provides=declared(model_entry.metadata), taskpool_provides=declared(task_entry.metadata),
                lacks=reasons(model_entry.metadata), taskpool_lacks=reasons(task_entry.metadata))


def suite_verdict(needs: Iterable[Capability], model_meta: Mapping[str, Any] | None,
                  task_meta: Mapping[str, Any] | None) -> tuple[bool | None, list[str]]:
    """Whether a method with ``needs`` runs on a suite, from its registrations' metadata alone.

    Returns ``(True, [])``, ``(False, missing)`` with the capabilities the suite declares it lacks, or
    ``(None, undeclared)`` when it lacks none it declares but declares nothing about some need.
    """
    model_side, task_side = declared(model_meta), declared(task_meta)
    missing, unknown = [], []
    for need in needs:
        if need in ANY_POOL:
            continue
        side = task_side if need in TASKPOOL_SIDE else model_side
        if side is None:
            unknown.append(need.value)
        elif need.value not in side:
            missing.append(need.value)
    if missing:
        return False, missing
    return (None, unknown) if unknown else (True, [])


def family_label(names: list[str]) -> str:
    """``names`` as one label: the name itself, or their common prefix (cut at a ``-``) and ``*``."""
    if len(names) == 1:
        return names[0]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("-") + 1] if "-" in prefix else prefix
    return f"{prefix}*" if prefix else ", ".join(names)


def pool_support(host: Any, method: Any) -> list[dict[str, Any]]:
    """For each family of registered model pools (one pool class), whether ``method`` runs on it.

    Each row: ``family`` (a label such as ``clip-vit-*``), ``pools`` (the names), ``runs`` (true, false, or
    null when the pools declare nothing about a need), ``missing`` or ``undeclared`` (capability names) and,
    where the pools say why they lack one, ``why`` (capability → reason). Pools of one class whose
    declarations disagree form separate rows. Imports nothing.
    """
    needs = method_needs(method)
    taskpools = host.registry("taskpool")
    groups: dict[tuple, list[str]] = {}
    why: dict[tuple, dict[str, str]] = {}
    for entry in host.registry("modelpool").entries():
        task_meta = taskpools.entry(entry.name).metadata if entry.name in taskpools else None
        runs, names = suite_verdict(needs, entry.metadata, task_meta)
        key = (entry.target_path, runs, tuple(names))
        groups.setdefault(key, []).append(entry.name)
        known = {**reasons(entry.metadata), **reasons(task_meta)}
        why.setdefault(key, {name: known[name] for name in names if name in known and runs is False})
    rows = []
    for key, pools in groups.items():
        _target, runs, names = key
        row: dict[str, Any] = {"family": family_label(pools), "pools": pools, "runs": runs}
        if runs is False:
            row["missing"] = list(names)
            if why[key]:
                row["why"] = why[key]
        elif runs is None:
            row["undeclared"] = list(names)
        rows.append(row)
    return sorted(rows, key=lambda row: row["family"])
