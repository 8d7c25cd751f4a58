"""What methods that use data share: the cost meter, device moves and the data request of a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from fusionbench_core import DataModelPool, DataRequest
from fusionbench_core.engine.devices import resolve_device as core_resolve_device
from fusionbench_core.errors import ConfigError


def require_data_pool(modelpool: Any, method: str) -> DataModelPool:
    """Return ``modelpool`` if it can hand out data, else raise a one-line error naming both."""
    if not isinstance(modelpool, DataModelPool):
        raise ConfigError(
            f"method '{method}' needs data, but model pool '{getattr(modelpool, 'name', modelpool)}' provides none"
        )
    return modelpool


def request_with(declared: DataRequest, **changes: Any) -> DataRequest:
    """The class's declared request with this run's settings (e.g. ``examples``) applied."""
    return dataclasses.replace(declared, **changes)


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Move a batch (a tensor, or a mapping/list/tuple of them) to ``device``; other leaves stay as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        moved = {key: move_to(value, device) for key, value in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:
            return moved
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(value, device) for value in obj)
    return obj


def batch_length(inputs: Any) -> int:
    """Number of examples in a batch: the leading size of its first tensor, or its length."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, Mapping):
        for value in inputs.values():
            return batch_length(value)
        return 0
    if isinstance(inputs, (list, tuple)):
        if inputs and isinstance(inputs[0], torch.Tensor):
            return batch_length(inputs[0])
        return len(inputs)
    return 1


def resolve_device(device: str) -> torch.device:
    """The device for hyperparameter ``device`` (``auto``: CUDA when available, else CPU)."""
    return core_resolve_device(device, setting="hyperparameter 'device'")


class CostMeter:
    """Counts what a method consumed; :meth:`as_dict` becomes the method's ``cost``.

    Passes are counted per example (a batch of 16 is 16 forward passes), so figures compare across
    batch sizes. ``examples`` counts the distinct data examples the method drew from the pool.
    """

    def __init__(self) -> None:
        self.examples = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.extra: dict[str, float] = {}

    def as_dict(self) -> dict[str, float]:
        """``{"examples": …, "forward_passes": …, "backward_passes": …, **extra}``."""
        out = {"examples": self.examples, "forward_passes": self.forward_passes,
               "backward_passes": self.backward_passes}
        out.update(self.extra)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


def check_differentiable(logits: torch.Tensor, modelpool: Any, method: str) -> None:
    """Raise when the pool returned logits detached from the model (a method needs their gradient)."""
    if not logits.requires_grad:
        raise ConfigError(
            f"method '{method}' needs gradients, but model pool '{getattr(modelpool, 'name', modelpool)}' "
            "returned logits without a graph (does its logits() run under no_grad?)"
        )
