"""Lazy tensor sources: read one tensor at a time from memory, safetensors files or pickles."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ModelLoadError
from ..protocols import TensorInfo, TensorSource


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``."""
    return str(dtype).removeprefix("torch.")


class StateDictSource:
    """A :class:`TensorSource` over an in-memory mapping of tensors (copies on :meth:`get`)."""

    def __init__(self, state: Mapping[str, torch.Tensor]):
        self._state = dict(state)

    def keys(self) -> list[str]:
        """Tensor names in insertion order."""
        return list(self._state)

    def info(self, key: str) -> TensorInfo:
        """Shape and dtype of ``key``."""
        tensor = self._state[key]
        return TensorInfo(tuple(tensor.shape), dtype_name(tensor.dtype))

    def get(self, key: str) -> torch.Tensor:
        """A detached copy of ``key``."""
        return self._state[key].detach().clone()


class SafetensorsSource:
    """A :class:`TensorSource` over one or more (sharded) safetensors files, memory-mapped."""

    def __init__(self, files: list[Path]):
        self.files = [Path(f) for f in files]
        self._handles = {}
        self._where: dict[str, Path] = {}
        for file in self.files:
            handle = self._open(file)
            for key in handle.keys():
                self._where[key] = file

    def _open(self, file: Path):
        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
                raise ModelLoadError(f"'{file}': not a readable safetensors file ({exc})") from exc
        return self._handles[file]

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._where)

    def info(self, key: str) -> TensorInfo:
        """Shape and dtype from the safetensors header, without reading data."""
        sl = self._open(self._where[key]).get_slice(key)
        return TensorInfo(tuple(sl.get_shape()), _SAFE_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower()))

    def get(self, key: str) -> torch.Tensor:
        """Read ``key``."""
        return self._open(self._where[key]).get_tensor(key)


_SAFE_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class PickleSource(StateDictSource):
    """A state-dict pickle, loaded with ``weights_only=True`` (no code from the file runs)."""

    def __init__(self, path: Path):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"'{path}': cannot load as a weights-only state dict ({type(exc).__name__}: {exc})") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelLoadError(f"'{path}': not a flat mapping of tensor names to tensors")
        super().__init__(state)


def open_source(path: Path | str) -> TensorSource:
    """Open a checkpoint: an HF model directory, a ``.safetensors`` file, a sharded index or a pickle."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"'{path}': no such file or directory")
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            raise ModelLoadError(f"'{path}' is a LoRA adapter directory: merge it together with its base model")
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
        try:
            index = json.loads(path.read_text())
            files = sorted({path.parent / f for f in index["weight_map"].values()})
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"'{path}': not a safetensors index ({exc})") from exc
        return SafetensorsSource(files)
    if path.suffix == ".safetensors":
        return SafetensorsSource([path])
    return PickleSource(path)
