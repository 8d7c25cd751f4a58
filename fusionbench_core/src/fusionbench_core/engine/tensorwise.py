"""Tensor-by-tensor merging: the base class of every weight-merging method.

A method implements :meth:`TensorwiseAlgorithm.merge_tensor`, which receives the pretrained tensor
and an *iterator* over the fine-tuned models' tensors of one name. Element-wise methods consume the
iterator with running accumulators, so peak memory does not grow with the number of models; methods
that need every delta at once ``list()`` it and hold one tensor's deltas only. Whole-model statistics
(TIES' global threshold) are gathered in :meth:`TensorwiseAlgorithm.prepare`, a first streaming pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..protocols import PRETRAINED, BaseAlgorithm, ModelPool, TensorSource, check_same_keys


class TensorwiseAlgorithm(BaseAlgorithm):
    """Base class of methods that merge each tensor independently (after an optional first pass)."""

    needs_pretrained: ClassVar[bool] = True
    """Whether the method needs θ₀ (task-vector methods do; plain averages do not)."""

    def prepare(self, pretrained: TensorSource | None, models: Sequence[TensorSource], keys: list[str]) -> None:
        """A first pass over the checkpoints before merging (default: nothing)."""

    def merge_tensor(self, key: str, pretrained: torch.Tensor | None, models: Iterator[torch.Tensor]) -> torch.Tensor:
        """Merge one tensor; tensors arrive in the compute dtype (float32, or float64 for float64 inputs)."""
        raise NotImplementedError

    def generator(self, key: str, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by the run's seed and the tensor name: the same bytes on every run."""
        import zlib

        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
        return gen

    def run(self, modelpool: ModelPool) -> Any:
        """Merge the pool's models in memory and return a module carrying the result."""
        names = list(modelpool.model_names)
        pretrained = modelpool.tensors(PRETRAINED) if modelpool.has_pretrained else None
        if self.needs_pretrained and pretrained is None:
            raise ConfigError(f"method '{self.name}' needs a pretrained model, but model pool '{modelpool.name}' has none")
        sources = [modelpool.tensors(name) for name in names]
        state: dict[str, torch.Tensor] = {}
        merge_sources(self, pretrained, sources, sink=state.__setitem__, model_names=names)
        return modelpool.build_model(state)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype merge arithmetic runs in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def merge_sources(
    algorithm: TensorwiseAlgorithm,
    pretrained: TensorSource | None,
    models: Sequence[TensorSource],
    *,
    sink: Callable[[str, torch.Tensor], None],
    model_names: Sequence[str] | None = None,
    out_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[str, int], None] | None = None,
) -> None:
    """Stream every tensor through ``algorithm`` and hand each result to ``sink(key, tensor)``.

    Non-floating tensors (integer buffers such as ``position_ids``) are copied from the pretrained
    model (or the first model) unchanged.
    """
    if not models:
        raise ConfigError(f"method '{algorithm.name}' got no models to merge")
    labelled = dict(zip(model_names or [f"model {i}" for i in range(len(models))], models, strict=True))
    if pretrained is not None:
        labelled = {PRETRAINED: pretrained, **labelled}
    keys = check_same_keys(labelled)
    algorithm.prepare(pretrained, models, keys)
    first = pretrained if pretrained is not None else models[0]
    for key in keys:
        base = first.get(key)
        if not base.is_floating_point():
            sink(key, base)
            if progress:
                progress(key, base.numel() * base.element_size())
            continue
        work = compute_dtype(base.dtype)
        theta0 = base.to(device=device, dtype=work) if pretrained is not None else None
        stream = (source.get(key).to(device=device, dtype=work) for source in models)
        merged = algorithm.merge_tensor(key, theta0, stream)
        result = merged.to(dtype=out_dtype or base.dtype)
        if result.device.type != "cpu":
            result = result.cpu()
        sink(key, result)
        if progress:
            progress(key, result.numel() * result.element_size())
