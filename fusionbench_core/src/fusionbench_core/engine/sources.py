"""Lazy tensor sources: open any checkpoint path as a :class:`~fusionbench_core.protocols.TensorSource`.

:func:`open_source` picks the reader for a path — HF model directories, ``.safetensors`` files,
sharded indexes, weights-only pickles, PEFT LoRA adapter directories — and this module re-exports
the readers themselves (:mod:`.readers`: ``StateDictSource``, ``SafetensorsSource``, ``PickleSource``,
``RenamedSource``, ``get_rows``…), so ``fusionbench_core.engine.sources`` is the one place to import
them from. The dependencies run one way: ``sources`` → ``lora`` → ``readers``.

Every source implements ``keys``, ``info`` and ``get`` plus ``get_rows(key, start, stop)``, which
reads rows ``start:stop`` of the tensor's first dimension; the engine reads large tensors in row
blocks so that its working memory stays bounded whatever the tensor size. Safetensors sources also
offer zero-copy ``view_rows`` with ``populate``/``release``, and ``read_into`` (see :mod:`.readers`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError
from ..protocols import TensorSource
from .lora import LoraSource
from .readers import (SAFETENSORS_DTYPES, SAFETENSORS_TAGS, PickleSource, RenamedSource, SafetensorsSource,
                      StateDictSource, dtype_name, get_rows, open_sharded, read_json_file, read_safetensors_header,
                      row_count)

__all__ = [
    "SAFETENSORS_DTYPES", "SAFETENSORS_TAGS", "LoraSource", "PickleSource", "RenamedSource", "SafetensorsSource",
    "StateDictSource", "dtype_name", "get_rows", "is_lora_adapter", "open_sharded", "open_source",
    "read_json_file", "read_safetensors_header", "row_count",
]


def is_lora_adapter(path: Path | str) -> bool:
    """Whether ``path`` is a PEFT LoRA adapter directory (it holds ``adapter_config.json``)."""
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").exists()


def open_source(path: Path | str, base: TensorSource | Path | str | None = None) -> TensorSource:
    """Open a checkpoint as a lazy :class:`TensorSource`.

    ``path`` may be an HF model directory, a ``.safetensors`` file, a sharded
    ``model.safetensors.index.json``, a weights-only pickle, or a PEFT LoRA adapter directory. An
    adapter needs ``base`` (a source or a path), and yields the base weights plus the adapter's
    ΔW = scale·B·A, computed tensor by tensor (see :class:`~fusionbench_core.engine.lora.LoraSource`).
    A model directory's ``config.json``, an adapter's ``adapter_config.json`` and a shard index are
    checked as they are read: a broken one is a one-line :class:`ModelLoadError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"'{path}': no such file or directory")
    if path.is_dir():
        if is_lora_adapter(path):
            if base is None:
                raise ModelLoadError(f"'{path}' is a LoRA adapter directory: give its base model (--pretrained)")
            return LoraSource(base if not isinstance(base, (str, Path)) else open_source(base), path)
        if (path / "config.json").exists():
            read_json_file(path / "config.json", "model config")
        for name in ("model.safetensors.index.json", "model.safetensors"):
            if (path / name).exists():
                return open_source(path / name)
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            return SafetensorsSource(shards)
        for name in ("pytorch_model.bin", "model.pt", "model.bin"):
            if (path / name).exists():
                return PickleSource(path / name)
        raise ModelLoadError(f"'{path}': no model.safetensors, sharded index or pytorch_model.bin inside")
    if path.name.endswith(".index.json"):
        return open_sharded(path)
    if path.suffix == ".safetensors":
        return SafetensorsSource([path])
    return PickleSource(path)
