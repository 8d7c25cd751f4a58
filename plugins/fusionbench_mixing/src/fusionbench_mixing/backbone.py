"""A backbone's parts as its pool declares them: the layer stack, the MLPs and the linear layers.

Everything here goes by module names and the pool's :class:`~fusionbench_core.protocols.ArchitectureSpec`,
never by a model family, so every mixing method runs on any pool that declares its architecture.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from fnmatch import fnmatch

import torch
from torch import nn

from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import ArchitectureSpec

STACK_TYPES = (nn.ModuleList, nn.Sequential)
"""Containers a layer stack may be: depth up-scaling rebuilds one of the same type."""


def is_linear(module: nn.Module, spec: ArchitectureSpec) -> bool:
    """Whether ``module``'s class (or a base class) is one of the pool's declared linear types."""
    return any(cls.__name__ in spec.linear_types for cls in type(module).__mro__)


def _drop_nested(names: list[str]) -> list[str]:
    kept: list[str] = []
    for name in names:
        if not any(name.startswith(f"{outer}.") or (outer == "" and name) for outer in kept):
            kept.append(name)
    return kept


def mlp_names(model: nn.Module, spec: ArchitectureSpec, method: str, pool: str) -> list[str]:
    """Names of the MLP modules (outermost matches of ``spec.mlps``), in module order; one-line error when none."""
    names = [name for name, _ in model.named_modules() if any(fnmatch(name, pattern) for pattern in spec.mlps)]
    if not names:
        raise ConfigError(f"method '{method}': model pool '{pool}' declares no MLP modules in its backbone "
                          f"(architecture().mlps = {list(spec.mlps)})")
    return _drop_nested(names)


def _in_scope(name: str, scope: str | None) -> bool:
    return scope is None or scope == "" or name == scope or name.startswith(f"{scope}.")


def linear_names(model: nn.Module, spec: ArchitectureSpec, method: str, pool: str) -> list[str]:
    """Names of the linear layers within the layer stack (the whole backbone when it declares none).

    A leaf module with a 2-D ``weight`` that is neither a declared linear type nor an embedding is a layer
    the method cannot handle: a one-line error names its type.
    """
    names = []
    for name, module in model.named_modules():
        if not _in_scope(name, spec.layers):
            continue
        if is_linear(module, spec):
            names.append(name)
            continue
        weight = getattr(module, "weight", None)
        leaf = next(module.children(), None) is None
        if leaf and isinstance(weight, torch.Tensor) and weight.dim() == 2 and not isinstance(module, nn.Embedding):
            raise ConfigError(f"method '{method}' cannot handle layer type '{type(module).__name__}' ('{name}'): "
                              f"model pool '{pool}' declares linear layers of type {', '.join(spec.linear_types)}")
    if not names:
        raise ConfigError(f"method '{method}': model pool '{pool}' has no linear layer of type "
                          f"{', '.join(spec.linear_types)} in its backbone")
    return _drop_nested(names)


def input_width(module: nn.Module, spec: ArchitectureSpec, method: str, name: str) -> int:
    """Width of the hidden states entering ``module``: the input width of its first linear layer."""
    for inner in module.modules():
        if is_linear(inner, spec):
            return int(inner.weight.shape[1])
    weighted = (type(m).__name__ for m in module.modules() if getattr(m, "weight", None) is not None)
    first = next(weighted, type(module).__name__)
    raise ConfigError(f"method '{method}' cannot handle layer type '{first}' in MLP '{name}': it holds no layer "
                      f"of type {', '.join(spec.linear_types)}")


def layer_stack(model: nn.Module, spec: ArchitectureSpec, method: str, pool: str) -> nn.Module:
    """The backbone's layer stack; one-line error when the pool declares none or it is not a list of layers."""
    if spec.layers is None:
        raise ConfigError(f"method '{method}': model pool '{pool}' declares no layer stack (architecture().layers)")
    stack = model.get_submodule(spec.layers) if spec.layers else model
    if not isinstance(stack, STACK_TYPES):
        raise ConfigError(f"method '{method}' cannot handle layer stack type '{type(stack).__name__}' "
                          f"('{spec.layers}'); it stacks ModuleList or Sequential layers")
    return stack


def restack(model: nn.Module, layers: str, indices: Iterable[int]) -> nn.Module:
    """``model`` whose layer stack at ``layers`` holds independent copies of the layers at ``indices``, in order.

    Returns the new stack itself when ``layers`` is ``""`` (the backbone is its own stack).
    """
    stack = model.get_submodule(layers) if layers else model
    copies = [copy.deepcopy(stack[i]) for i in indices]
    # transformers' blocks address the key/value cache by their position (``layer_idx``), and the cache is
    # sized by ``config.num_hidden_layers``: a copy keeping its old position collides with the original.
    for position, block in enumerate(copies):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    new = nn.Sequential(*copies) if isinstance(stack, nn.Sequential) else nn.ModuleList(copies)
    if not layers:
        return new
    model.set_submodule(layers, new)
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "num_hidden_layers", None), int):
        model.config = copy.deepcopy(config)
        model.config.num_hidden_layers = len(copies)
    return model


def replace(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of submodule ``name`` of ``model``."""
    model.set_submodule(name, module)


def stored_parameters(model: nn.Module) -> int:
    """Number of floating-point values the model stores (parameters and buffers, shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel()
    return total


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype decompositions run in: float64 for float64 weights, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def task_arithmetic_backbone(modelpool, scaling_factor: float) -> nn.Module:
    """The pool's task-arithmetic merge ``θ₀ + λ Σ_i τ_i`` as a backbone (``fusionbench_methods``' own)."""
    from fusionbench_methods.task_arithmetic import TaskArithmetic

    return TaskArithmetic(scaling_factor=scaling_factor).run(modelpool)


def module_deltas(modelpool, base: nn.Module, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {parameter: (T, *shape)}}``: the task vectors of modules ``names``.

    One fine-tuned model is loaded at a time; ``base`` is the pretrained backbone.
    """
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in names}
    for model_name in modelpool.model_names:
        model = modelpool.load_model(model_name)
        for name in names:
            own = dict(base.get_submodule(name).named_parameters())
            for key, param in model.get_submodule(name).named_parameters():
                if param.is_floating_point():
                    collected[name].setdefault(key, []).append(param.detach().to(own[key].dtype) - own[key].detach())
        del model
    return {name: {key: torch.stack(values) for key, values in params.items()} for name, params in collected.items()}
