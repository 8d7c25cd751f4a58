"""RegMean++'s layer-by-layer loop: Grams of each layer group taken on inputs from the merged lower layers.

The backbone's layers are visited in execution order, found by one hooked probe forward pass. Layers
are grouped by the elements of the backbone's longest ``nn.ModuleList`` (the transformer blocks), and
every linear layer outside such a list is a group of its own; a group's *scope* is its block (or the
lone linear). Before the Grams of group ``g`` are taken, every module outside ``g``'s scope that
finished running before ``g`` starts (embeddings, earlier blocks, norms, earlier linears) is replaced
in every model by its merged value, while everything inside the scope stays each model's own: model
``i``'s Grams for block ``g`` are those of its own block ``g`` run on what the merged lower layers
produce on task ``i`` (upstream's block-wise definition; a block's first LayerNorm is merged only
once the block is done). Each forward pass stops as soon as the group's last linear has seen its inputs.

A weight tied between modules is one tensor of the pool, merged once where it is first reached: when
an earlier module (a tied input embedding) has already fixed its merged value, the linear layer that
shares it keeps that value, so the models never see two values of one tensor. Module names and the
pool's tensor names are paired through :func:`fusionbench_core.naming.tensor_naming`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fusionbench_core.errors import ConfigError
from fusionbench_core.naming import TensorNaming, tensor_naming
from fusionbench_core.progress import track
from fusionbench_core.protocols import check_same_keys

from .data_access import CostMeter, batch_length, request_with, require_data_pool
from .linear_statistics import (GramCollector, accumulation_dtype, as_out_in, draw_batches, is_input_major,
                                linear_layers, regmean_solve, weight_key)


class _StopForward(Exception):
    """Raised by a hook once the inputs a group needs are collected; the pass is abandoned."""


def execution_order(model: nn.Module, run: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Event indices of the first start and first end of every module holding tensors, from one call of ``run()``."""
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    counter = [0]
    handles = []

    def mark(table: dict[str, int], name: str):
        def hook(*_: Any) -> None:
            if name not in table:
                table[name] = counter[0]
                counter[0] += 1

        return hook

    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            handles.append(module.register_forward_pre_hook(mark(starts, name)))
            handles.append(module.register_forward_hook(mark(ends, name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return starts, ends


def layer_groups(model: nn.Module, linears: Sequence[str], starts: Mapping[str, int]) -> list[tuple[str, list[str]]]:
    """``(scope, linears)`` per group in execution order: a block of the longest ``nn.ModuleList`` (its name is
    the scope), or a lone linear elsewhere (its own scope)."""
    lists = [(name, len(module)) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    lists = [entry for entry in lists if entry[1] >= 2]
    block_prefix = max(lists, key=lambda entry: entry[1])[0] if lists else None
    groups: dict[str, list[str]] = {}
    for layer in sorted((name for name in linears if name in starts), key=starts.__getitem__):
        scope = layer
        if block_prefix is not None and layer.startswith(f"{block_prefix}."):
            scope = ".".join(layer.split(".")[: block_prefix.count(".") + 2])
        groups.setdefault(scope, []).append(layer)
    return sorted(groups.items(), key=lambda item: starts[item[1][0]])


def within(unit: str, scope: str) -> bool:
    """Whether module ``unit`` is ``scope`` or lies below it."""
    return unit == scope or scope == "" or unit.startswith(f"{scope}.")


def _tensor_keys(model: nn.Module, unit: str, naming: TensorNaming) -> list[str]:
    """The pool's keys of the tensors ``unit`` holds itself; a tied tensor under the key the pool holds it by."""
    module = model.get_submodule(unit)
    own = [name for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
    full = [f"{unit}.{name}" if unit else name for name in own]
    return [naming.key(name) for name in full if name in naming]


def regmean_plusplus(algorithm: Any, modelpool: Any) -> nn.Module:
    """Merge the pool's models with RegMean++ (see the module docstring); fills ``algorithm.cost``."""
    pool = require_data_pool(modelpool, algorithm.name)
    names = list(pool.model_names)
    meter = CostMeter()
    request = request_with(algorithm.data, examples=algorithm.examples)
    sources = [pool.tensors(name) for name in names]
    keys = check_same_keys(dict(zip(names, sources, strict=True)))
    models = []
    for name in names:
        model = pool.load_model(name)
        model.eval()
        models.append(model)
    naming = tensor_naming(pool, models[0], keys)
    tensors = []
    for model in models:
        named = dict(model.named_buffers(remove_duplicate=False))
        named.update(model.named_parameters(remove_duplicate=False))
        tensors.append({key: named[naming.module(key)] for key in keys})
    batches = []
    for name in names:
        drawn = draw_batches(pool, name, request, algorithm.batch_size)
        if not drawn:
            raise ConfigError(f"model pool '{pool.name}' gave no training inputs for task '{name}'")
        meter.examples += sum(batch_length(inputs) for inputs, _ in drawn)
        batches.append(drawn)

    probe_inputs = batches[0][0][0]
    starts, ends = execution_order(models[0], lambda: pool.logits(names[0], models[0], probe_inputs))
    meter.forward_passes += batch_length(probe_inputs)
    linears = linear_layers(models[0])
    groups = layer_groups(models[0], list(linears), starts)
    if not groups:
        raise ConfigError(f"model pool '{pool.name}': no linear layer (nn.Linear or Conv1D) ran in a forward pass")

    merged: dict[str, torch.Tensor] = {}

    def mean_of(key: str) -> torch.Tensor:
        first = sources[0].get(key)
        if not first.is_floating_point():
            return first
        work = accumulation_dtype(first.dtype)
        return torch.stack([source.get(key).to(work) for source in sources]).mean(dim=0).to(first.dtype)

    patched: set[str] = set()
    with torch.no_grad():
        for scope, group in track(groups, f"{algorithm.name}: layer groups"):
            start = starts[group[0]]
            for unit, end in ends.items():
                if unit in patched or end >= start or within(unit, scope):
                    continue
                for key in _tensor_keys(models[0], unit, naming):
                    if key not in merged:
                        merged[key] = mean_of(key)
                    for own in tensors:
                        own[key].copy_(merged[key].to(own[key].dtype))
                patched.add(unit)
            grams = [_group_grams(pool, name, model, group, model_batches, meter)
                     for name, model, model_batches in zip(names, models, batches, strict=True)]
            for layer in group:
                key = naming.key(weight_key(layer))
                if key in merged:  # tied to a tensor an earlier module already merged
                    continue
                first = sources[0].get(key)
                work = accumulation_dtype(first.dtype)
                input_major = is_input_major(linears[layer])
                weights = [as_out_in(source.get(key).to(work), input_major) for source in sources]
                solution = regmean_solve([g[layer] for g in grams], weights, algorithm.alpha)
                merged[key] = as_out_in(solution, input_major).contiguous().to(first.dtype)
    state = {key: merged[key] if key in merged else mean_of(key) for key in keys}
    meter.extra["layer_groups"] = len(groups)
    algorithm.cost = meter.as_dict()
    return pool.build_model(state)


def _group_grams(pool: Any, name: str, model: nn.Module, group: Sequence[str], batches: Sequence[tuple[Any, Any]],
                 meter: CostMeter) -> dict[str, torch.Tensor]:
    layers = {layer: model.get_submodule(layer) for layer in group}
    last = group[-1]

    def stop(*_: Any) -> None:
        raise _StopForward

    with GramCollector(layers) as collector:
        handle = layers[last].register_forward_pre_hook(stop)  # registered after the collector's hook: runs after it
        try:
            for inputs, _ in batches:
                try:
                    pool.logits(name, model, inputs)
                except _StopForward:
                    pass
                meter.forward_passes += batch_length(inputs)
        finally:
            handle.remove()
    grams = collector.grams()
    missing = [layer for layer in group if layer not in grams]
    if missing:
        raise ConfigError(f"model '{name}': linear layer '{missing[0]}' saw no inputs before '{last}'")
    return grams
