"""Tensor-by-tensor merging: the base class of every weight-merging method, and the streaming engine.

A method implements :meth:`TensorwiseAlgorithm.merge_tensor`, which receives the pretrained tensor
and an *iterator* over the fine-tuned models' tensors of one name. Element-wise methods consume the
iterator with running accumulators, so peak memory does not grow with the number of models; methods
that need every delta at once ``list()`` it and hold one tensor's deltas only. Whole-model statistics
(TIES' global threshold) are gathered in :meth:`TensorwiseAlgorithm.prepare`, with
:meth:`TensorwiseAlgorithm.scan_deltas` streaming the task vectors once more.

Blocks: a method that declares ``chunkable = True`` (its result for a row depends only on that row
of every input) receives large tensors in blocks of whole rows, at most ``chunk_elements`` elements
each, so the engine's working memory is bounded by the block size, not the tensor size.
:attr:`TensorwiseAlgorithm.block` tells the method which rows it is merging.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, ShapeMismatchError
from ..protocols import PRETRAINED, BaseAlgorithm, ModelPool, TensorSource, check_same_keys

if TYPE_CHECKING:  # torch is imported when a merge runs, so method plugins stay light to list
    import torch

DEFAULT_CHUNK_ELEMENTS = 2**20
"""Largest block (in elements) a chunkable method receives: 4 MiB of float32."""


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of tensor ``key`` (of ``shape``); ``index`` counts the tensor's blocks from 0."""

    key: str
    index: int
    start: int
    stop: int
    shape: tuple[int, ...]

    @property
    def row_elements(self) -> int:
        """Elements per row (1 for a vector, all of it for a scalar)."""
        return math.prod(self.shape[1:]) if self.shape else 1

    @property
    def offset(self) -> int:
        """Flat index of the block's first element in the whole tensor."""
        return self.start * self.row_elements

    @property
    def whole(self) -> bool:
        """Whether the block is the whole tensor."""
        return self.start == 0 and self.stop == (self.shape[0] if self.shape else 1)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of the block's tensors."""
        return (self.stop - self.start, *self.shape[1:]) if self.shape else ()


def plan_blocks(key: str, shape: tuple[int, ...], chunk_elements: int | None) -> list[Block]:
    """Split ``key`` into row blocks of at most ``chunk_elements`` elements (None: one block)."""
    rows = shape[0] if shape else 1
    row_elements = math.prod(shape[1:]) if shape else 1
    if chunk_elements is None or rows <= 1 or rows * row_elements <= chunk_elements:
        return [Block(key, 0, 0, rows, shape)]
    per = max(1, chunk_elements // max(row_elements, 1))
    return [Block(key, i, start, min(start + per, rows), shape) for i, start in enumerate(range(0, rows, per))]


@dataclass
class EngineOptions:
    """How the engine streams: block size, compute device, whether reads run ahead on a thread."""

    chunk_elements: int | None = DEFAULT_CHUNK_ELEMENTS
    device: str = "cpu"
    prefetch: bool = True


def running_sum(tensors: Iterable[torch.Tensor], *, fresh: bool = False) -> tuple[torch.Tensor | None, int]:
    """``(Σ tensors, count)``, accumulated one tensor at a time so memory stays flat in their number.

    The sum is built in the first tensor when ``fresh`` says the caller made it and it may be written
    (``tensor - θ₀``, a dropped delta); otherwise the first is cloned, since inputs may be read-only
    views of memory-mapped files. Later tensors are only read. ``(None, 0)`` when there are none.
    """
    total = None
    count = 0
    for tensor in tensors:
        total = (tensor if fresh else tensor.clone()) if total is None else total.add_(tensor)
        count += 1
    return total, count


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype merge arithmetic runs in for inputs of ``dtype``."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)


class TensorwiseAlgorithm(BaseAlgorithm):
    """Base class of methods that merge each tensor independently (after an optional first pass)."""

    needs_pretrained: ClassVar[bool] = True
    """Whether the method needs θ₀ (task-vector methods do; plain averages do not)."""

    chunkable: ClassVar[bool] = False
    """True when each output row depends only on the same row of the inputs (element- or row-wise)."""

    gpu_worthwhile: ClassVar[bool] = True
    """False for I/O-bound methods (a few element-wise ops per byte read): measured slower on the GPU
    than on the CPU (pinned staging + two transfers cost more than the arithmetic saves), so
    ``device="cuda"`` keeps their arithmetic on the CPU. See docs/performance.md."""

    inplace_inputs: ClassVar[bool] = True
    """Whether :meth:`merge_tensor` may modify the tensors it receives. Methods that never do set
    False and may then receive zero-copy views of memory-mapped inputs (no copy per model)."""

    block: Block | None = None
    """The block being merged (set by the engine before each :meth:`merge_tensor` call)."""

    engine: EngineOptions | None = None
    """The engine options of the current merge (set on the instance by :func:`merge_sources`)."""

    def prepare(self, pretrained: TensorSource | None, models: Sequence[TensorSource], keys: list[str]) -> None:
        """A first pass over the checkpoints before merging (default: nothing)."""

    def merge_tensor(self, key: str, pretrained: torch.Tensor | None, models: Iterator[torch.Tensor]) -> torch.Tensor:
        """Merge one tensor (or one block of rows); tensors arrive in the compute dtype (float32/float64)."""
        raise NotImplementedError

    def finalize(self) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
        """After the last tensor: ``(key, flat_index, values)`` patches for already written tensors."""
        return ()

    def generator(self, key: str, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by the run's seed, the tensor name and the block index: the same bytes on every run.

        Draws should be made on the CPU generator (the default) so that ``--device cuda`` gives the
        same result as the CPU path.
        """
        import torch

        index = self.block.index if self.block is not None and self.block.key == key else 0
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(f"{key}#{index}".encode())) % (2**63))
        return gen

    def scan_deltas(self, pretrained: TensorSource, models: Sequence[TensorSource], keys: Sequence[str], *,
                    chunked: bool | None = None) -> Iterator[tuple[Block, int, torch.Tensor]]:
        """Stream ``(block, model_index, τ_i block)`` over the floating tensors, for :meth:`prepare` passes.

        Tensors come in row blocks when ``chunked`` (default: :attr:`chunkable`), else whole; block
        size, device and prefetching follow the current merge's :attr:`engine` options.
        """
        options = self.engine if self.engine is not None else EngineOptions()
        yield from _scan_deltas(pretrained, models, keys, options, self.chunkable if chunked is None else chunked)

    def run(self, modelpool: ModelPool) -> Any:
        """Merge the pool's models in memory and return a module carrying the result."""
        names = list(modelpool.model_names)
        pretrained = modelpool.tensors(PRETRAINED) if modelpool.has_pretrained else None
        if self.needs_pretrained and pretrained is None:
            raise ConfigError(f"method '{self.name}' needs a pretrained model, but model pool '{modelpool.name}' has none")
        sources = [modelpool.tensors(name) for name in names]
        from .writer import StateDictSink

        sink = StateDictSink()
        merge_sources(self, pretrained, sources, sink=sink, model_names=names)
        return modelpool.build_model(sink.state)


def _floating(dtype_name: str) -> bool:
    return _torch_dtype(dtype_name).is_floating_point


def _scan_deltas(pretrained, models, keys, options: EngineOptions, chunkable: bool):
    from .prefetch import Read, TensorReader

    blocks = []
    for key in keys:
        info = pretrained.info(key)
        if _floating(info.dtype):
            blocks.extend(plan_blocks(key, info.shape, options.chunk_elements if chunkable else None))

    def reads():
        for block in blocks:
            work = compute_dtype(_torch_dtype(pretrained.info(block.key).dtype))
            for source in (pretrained, *models):
                yield Read(source, block.key, block.start, block.stop, work, None, False)

    reader = TensorReader(reads(), device=options.device, background=options.prefetch)
    try:
        for block in blocks:
            base = next(reader)
            for index in range(len(models)):
                yield block, index, next(reader) - base
            for source in (pretrained, *models):
                release = getattr(source, "release", None)
                if release is not None:
                    release(block.key, block.start, block.stop)
    finally:
        reader.close()


def effective_device(algorithm: TensorwiseAlgorithm, device: str | Any) -> str:
    """Where ``algorithm`` actually computes when asked for ``device`` (I/O-bound methods stay on the CPU)."""
    return "cpu" if not algorithm.gpu_worthwhile else str(device)


def merge_sources(
    algorithm: TensorwiseAlgorithm,
    pretrained: TensorSource | None,
    models: Sequence[TensorSource],
    *,
    sink: Any,
    model_names: Sequence[str] | None = None,
    out_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[str, int], None] | None = None,
    chunk_elements: int | None = DEFAULT_CHUNK_ELEMENTS,
    hashers: Sequence[Any] | None = None,
    prefetch: bool = True,
) -> list[str]:
    """Stream every tensor through ``algorithm`` and hand each result to ``sink``; return the keys.

    ``sink`` is a :class:`~fusionbench_core.engine.writer.StateDictSink`, a
    :class:`~fusionbench_core.engine.writer.SafetensorsWriter`, or a plain ``sink(key, tensor)``
    callable. ``out_dtype`` casts floating results (default: the dtype of θ₀, or of the first
    model). Non-floating tensors (integer buffers such as ``position_ids``) are copied from θ₀ (or
    the first model) unchanged. ``progress(key, n_bytes_read)`` is called after each block;
    ``hashers`` (one per input, θ₀ first when given) receive every input byte read in the merge pass.
    """
    import torch

    from .prefetch import Read, TensorReader, drain, take
    from .writer import CallableSink

    if not models:
        raise ConfigError(f"method '{algorithm.name}' got no models to merge")
    if device != "cpu" and not (str(device).startswith("cuda") and torch.cuda.is_available()):
        raise ConfigError(f"device '{device}' is not available here (use --device cpu)")
    device = effective_device(algorithm, device)
    if callable(sink) and not hasattr(sink, "write"):
        sink = CallableSink(sink)
    labelled = dict(zip(model_names or [f"model {i}" for i in range(len(models))], models, strict=True))
    if pretrained is not None:
        labelled = {PRETRAINED: pretrained, **labelled}
    keys = check_same_keys(labelled)
    options = EngineOptions(chunk_elements=chunk_elements, device=str(device), prefetch=prefetch)
    algorithm.engine = options
    algorithm.block = None
    algorithm.prepare(pretrained, models, keys)
    inputs = [pretrained, *models] if pretrained is not None else list(models)
    first = inputs[0]
    hashers = list(hashers) if hashers is not None else [None] * len(inputs)
    chunk = chunk_elements if algorithm.chunkable else None

    plan: list[tuple[Block, bool, torch.dtype]] = []
    for key in keys:
        info = first.info(key)
        dtype = _torch_dtype(info.dtype)
        if not dtype.is_floating_point:
            plan.append((Block(key, 0, 0, info.shape[0] if info.shape else 1, info.shape), False, dtype))
            continue
        for block in plan_blocks(key, info.shape, chunk):
            plan.append((block, True, dtype))

    writable = algorithm.inplace_inputs

    def reads():
        for block, floating, dtype in plan:
            work = compute_dtype(dtype) if floating else None
            for source, hasher in zip(inputs, hashers, strict=True):
                yield Read(source, block.key, block.start, block.stop, work, hasher, writable)

    reader = TensorReader(reads(), device=device, background=prefetch)
    n_models = len(models)
    try:
        for block, floating, dtype in plan:
            if not floating:
                value = next(reader)
                for _ in range(len(inputs) - 1):
                    next(reader)
                result = value.cpu() if value.device.type != "cpu" else value.clone()
                sink.write(block.key, result)
                if progress:
                    progress(block.key, result.numel() * result.element_size() * len(inputs))
                continue
            algorithm.block = block
            theta0 = next(reader) if pretrained is not None else None
            consumed = [0]
            merged = algorithm.merge_tensor(block.key, theta0, take(reader, n_models, consumed))
            drain(reader, n_models, consumed)
            for source in inputs:
                release = getattr(source, "release", None)
                if release is not None:
                    release(block.key, block.start, block.stop)
            if tuple(merged.shape) != block.block_shape:
                raise ShapeMismatchError(f"method '{algorithm.name}' returned shape {list(merged.shape)} "
                                         f"for tensor '{block.key}' of shape {list(block.block_shape)}")
            result = merged.to(dtype=out_dtype or dtype)
            if result.device.type != "cpu":
                result = result.cpu()
            if block.whole:
                sink.write(block.key, result)
            else:
                _write_rows(sink, block, result, out_dtype or dtype)
            if progress:
                progress(block.key, result.numel() * dtype.itemsize * len(inputs))
    finally:
        reader.close()
        algorithm.block = None
    for key, flat_index, values in algorithm.finalize():
        sink.patch(key, flat_index, values)
    return keys


def _write_rows(sink: Any, block: Block, rows: torch.Tensor, dtype: torch.dtype) -> None:
    writer = getattr(sink, "write_rows", None)
    if writer is None:
        raise ConfigError(f"sink {type(sink).__name__} cannot take tensor '{block.key}' in row blocks")
    writer(block.key, block.start, rows, block.shape)
