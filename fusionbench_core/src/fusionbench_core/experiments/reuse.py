"""λ sweeps that compute once what does not depend on λ (``fb sweep``'s λ-group path).

Task arithmetic and TIES merge to ``θ(λ) = θ₀ + λ·τ``, where the task vector ``τ`` (the sum of the
task vectors; TIES' trimmed, sign-elected, disjointly merged one) does not depend on λ. A sweep
over λ therefore needs:

- the model pool and the task pool built once (the evaluation data and the heads are then read
  once and kept by the pool, e.g. :class:`~fusionbench_core.suitekit.pools.ExpertSuiteTaskPool`);
- ``τ`` computed once, by the method itself run at ``λ = 1`` (:class:`ScaledTaskVector`):
  ``τ = θ(1) − θ₀``, kept in float64 so the subtraction is exact;
- per λ, only ``θ₀ + λ·τ`` (one multiply-add per weight) and the evaluation.

``θ₀ + λ·τ`` equals the method's own ``θ(λ)`` up to floating-point rounding (one ulp of the weights;
``tests`` check the stored metrics against separate runs). Which methods are linear in a
hyperparameter is said in one place: a method class may declare ``lambda_linear = "<hyperparameter>"``,
and :data:`LAMBDA_LINEAR` names the built-in ones. Only
:class:`~fusionbench_core.engine.tensorwise.TensorwiseAlgorithm` methods qualify (their merge can be
captured as a state dict).

:func:`group_cells` splits a sweep's cells into λ groups (same suite, method, seed and other
hyperparameters) and :func:`execute_lambda_group` runs one group, yielding one report per cell as
each is complete, so an interrupted group keeps its finished cells.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..config import ComponentSpec, RunConfig

__all__ = ["LAMBDA_LINEAR", "ScaledTaskVector", "execute_lambda_group", "group_cells", "lambda_axis"]

LAMBDA_LINEAR: Mapping[str, str] = {"task_arithmetic": "scaling_factor", "ties": "scaling_factor"}
"""Registered method name → the hyperparameter λ whose merge is ``θ₀ + λ·τ`` with ``τ`` free of λ."""

UNIT = 1.0
"""The λ at which the method is run once to read off ``τ = θ(UNIT) − θ₀``."""


def lambda_axis(method: str, factory: Any) -> str | None:
    """The hyperparameter that scales ``method``'s task vector, or ``None`` when it has none.

    ``factory`` is the method's class (or an instance): its ``lambda_linear`` attribute wins, else
    :data:`LAMBDA_LINEAR`; either way the method must be a tensor-wise merge that declares that
    hyperparameter.
    """
    from ..engine.tensorwise import TensorwiseAlgorithm

    cls = factory if isinstance(factory, type) else type(factory)
    axis = getattr(cls, "lambda_linear", None) or LAMBDA_LINEAR.get(method)
    if not axis or not (isinstance(cls, type) and issubclass(cls, TensorwiseAlgorithm)):
        return None
    declared = {hp.name for hp in getattr(cls, "hyperparameters", ())}
    return axis if axis in declared else None


class ScaledTaskVector:
    """``θ₀`` and ``τ`` of a λ-linear merge; :meth:`model_at` builds ``θ₀ + λ·τ`` for any λ.

    Floating tensors hold ``τ`` in float64 (``θ(1) − θ₀`` of two float32 or float64 tensors is then
    exact for float32 inputs); other tensors (integer buffers) are taken from the merge unchanged.
    """

    def __init__(self, pretrained: dict[str, Any], vector: dict[str, Any], fixed: dict[str, Any], modelpool: Any):
        self.pretrained, self.vector, self.fixed, self.modelpool = pretrained, vector, fixed, modelpool

    @classmethod
    def from_method(cls, algorithm: Any, modelpool: Any) -> ScaledTaskVector:
        """Run ``algorithm`` (set to λ = :data:`UNIT`) once over ``modelpool`` and keep ``θ₀`` and ``τ``."""
        from ..engine.tensorwise import merge_sources
        from ..engine.writer import StateDictSink
        from ..errors import ConfigError
        from ..protocols import PRETRAINED

        if not modelpool.has_pretrained:
            raise ConfigError(f"method '{algorithm.name}' needs a pretrained model, "
                              f"but model pool '{modelpool.name}' has none")
        import torch

        names = list(modelpool.model_names)
        pretrained_source = modelpool.tensors(PRETRAINED)
        sink = StateDictSink()
        # float64 output: the merge's own float32 (or float64) result, uncast to θ₀'s dtype.
        merge_sources(algorithm, pretrained_source, [modelpool.tensors(n) for n in names], sink=sink,
                      model_names=names, out_dtype=torch.float64)
        pretrained, vector, fixed = {}, {}, {}
        for key in list(sink.state):
            merged = sink.state.pop(key)
            if merged.is_floating_point():
                base = pretrained_source.get(key)
                pretrained[key] = base.clone()
                vector[key] = merged - base.double()
            else:
                fixed[key] = merged
        return cls(pretrained, vector, fixed, modelpool)

    def state_at(self, scale: float) -> dict[str, Any]:
        """``θ₀ + scale·τ`` per floating tensor (in θ₀'s dtype), the other tensors as merged."""
        state = {key: (base.double() + scale * self.vector[key]).to(base.dtype)
                 for key, base in self.pretrained.items()}
        state.update(self.fixed)
        return state

    def model_at(self, scale: float) -> Any:
        """The model pool's model carrying :meth:`state_at` ``(scale)``."""
        return self.modelpool.build_model(self.state_at(scale))


def group_key(cell: Any, axis: str) -> tuple[Any, ...]:
    """What the cells of one λ group share: suite, method, seed and every hyperparameter but ``axis``."""
    import json

    others = {k: v for k, v in (cell.settings or cell.hyperparameters).items() if k != axis}
    return (cell.suite.label, json.dumps(cell.suite.modelpool.options, sort_keys=True, default=str),
            json.dumps(cell.suite.taskpool.options, sort_keys=True, default=str), cell.method, cell.seed,
            json.dumps(others, sort_keys=True, default=str))


def group_cells(cells: Sequence[Any], axes: Mapping[str, str | None]) -> list[list[Any]]:
    """The cells in λ groups (first-appearance order); a cell whose method has no λ axis is a group of one.

    ``axes`` maps each method name to :func:`lambda_axis` of it.
    """
    groups: dict[tuple[Any, ...], list[Any]] = {}
    out: list[list[Any]] = []
    for cell in cells:
        axis = axes.get(cell.method)
        if axis is None:
            out.append([cell])
            continue
        key = group_key(cell, axis)
        if key not in groups:
            groups[key] = []
            out.append(groups[key])
        groups[key].append(cell)
    return out


def execute_lambda_group(configs: Sequence[RunConfig], axis: str, host: Any = None, *, splits: Sequence[str] = (),
                         predictions: bool = False) -> Iterator[dict[str, Any]]:
    """Run the configurations of one λ group (they differ in ``axis`` alone), yielding each run's report.

    Both pools are built once and ``τ`` computed once (in the first cell, whose ``cost.fuse_s``
    includes it; every report's ``cost.lambda_group`` says how long ``τ`` took and how many cells
    share it). Each report is what :func:`fusionbench_core.run.execute` would return for the same
    configuration (``write=False``), up to floating-point rounding of the merged weights.
    """
    from ..plugins import get_host
    from ..protocols import bind_taskpool
    from ..run import RunInfo, check_splits, instantiate, score_and_report, seed_everything

    host = host or get_host()
    configs = list(configs)
    if not configs:
        return
    first = configs[0]
    modelpool_spec, taskpool_spec = copy.deepcopy(first.modelpool), copy.deepcopy(first.taskpool)
    modelpool = instantiate(host, "modelpool", modelpool_spec, seed=first.seed)
    taskpool = instantiate(host, "taskpool", taskpool_spec, seed=first.seed)
    bind_taskpool(taskpool, modelpool)
    splits = check_splits(taskpool, taskpool_spec.name, splits)
    vector: ScaledTaskVector | None = None
    vector_s = 0.0
    for config in configs:
        config = copy.deepcopy(config)
        config.modelpool, config.taskpool = copy.deepcopy(modelpool_spec), copy.deepcopy(taskpool_spec)
        algorithm = instantiate(host, "method", config.method)
        info = RunInfo(config, algorithm, modelpool, taskpool, None)
        host.call_hook("run_started", run=info)
        seed_everything(config.seed)
        if hasattr(algorithm, "seed"):
            algorithm.seed = config.seed
        start = time.perf_counter()
        if vector is None:
            unit = instantiate(host, "method", ComponentSpec(config.method.name, {**algorithm.settings, axis: UNIT}))
            unit.seed = config.seed
            vector = ScaledTaskVector.from_method(unit, modelpool)
            algorithm.cost.update(getattr(unit, "cost", {}) or {})
            vector_s = time.perf_counter() - start
        fused = vector.model_at(float(algorithm.settings[axis]))
        fused_at = time.perf_counter()
        report = score_and_report(config, algorithm, taskpool, fused, host, info, splits=splits,
                                  predictions=predictions, started=start, fused_at=fused_at)
        report["cost"]["lambda_group"] = {"task_vector_s": round(vector_s, 3), "cells": len(configs), "axis": axis}
        host.call_hook("run_finished", run=info, report=report)
        yield report
