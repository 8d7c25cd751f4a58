"""Where merged tensors go: an in-memory state dict, or sharded safetensors written as tensors complete.

A *sink* has ``write(key, tensor)`` and ``patch(key, flat_index, values)``; the engine calls
``write`` once per tensor as soon as it is merged, and ``patch`` for the rare elements a method can
only settle after the whole model has been seen (TIES' whole-model majority sign for exact ties).

:class:`SafetensorsWriter` knows every tensor's name, shape and dtype before the merge starts, so it
lays out the shards, writes each shard's header up front, sizes the files, and ``pwrite``\\ s each
tensor at its offset the moment it is done, from a background thread. No shard is held in memory.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError
from .readers import SAFETENSORS_TAGS

DEFAULT_SHARD_BYTES = 5 * 10**9
"""HF's default maximum shard size, 5 GB."""


def parse_size(text: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count → bytes."""
    if isinstance(text, int):
        return text
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    raw = str(text).strip().upper()
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ConfigError(f"shard size '{text}' is not a size such as 5GB or 500MB")
    return int(value * units[unit])


class StateDictSink:
    """Collects merged tensors in a dict (``fb run``: the merged model is evaluated, not written)."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Keep ``tensor`` under ``key``."""
        self.state[key] = tensor

    def write_rows(self, key: str, start: int, rows: torch.Tensor, shape: tuple[int, ...]) -> None:
        """Place a block of rows of a tensor of ``shape`` (allocated on its first block)."""
        if key not in self.state:
            self.state[key] = torch.empty(shape, dtype=rows.dtype)
        self.state[key][start:start + rows.shape[0]] = rows
        if start + rows.shape[0] == shape[0]:
            self.completed(key)

    def completed(self, key: str) -> None:
        """Called when every row block of ``key`` has arrived."""

    def patch(self, key: str, flat_index: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite elements of an already written tensor."""
        self.state[key].view(-1)[flat_index] = values.to(self.state[key].dtype)


class CallableSink(StateDictSink):
    """Adapts a ``sink(key, tensor)`` callable; keeps references to the tensors so patches can apply."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Hand ``tensor`` to the callable."""
        self.state[key] = tensor
        self.function(key, tensor)

    def completed(self, key: str) -> None:
        """Hand a tensor assembled from row blocks to the callable."""
        self.function(key, self.state[key])


class _Slot:
    __slots__ = ("fd", "offset", "nbytes", "dtype", "shape")

    def __init__(self, fd: int, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...]):
        self.fd, self.offset, self.nbytes, self.dtype, self.shape = fd, offset, nbytes, dtype, shape


class SafetensorsWriter:
    """Writes sharded safetensors into ``directory`` tensor by tensor (see the module docstring).

    ``plan`` lists ``(key, shape, dtype)`` in merge order; shards fill in that order up to
    ``max_shard_bytes``; inside a shard tensors are laid out by decreasing element size so every
    tensor's data stays aligned. One shard is ``model.safetensors``; more are
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``.
    """

    def __init__(self, directory: Path, plan: Sequence[tuple[str, tuple[int, ...], torch.dtype]], *,
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None,
                 background: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        shards: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = [[]]
        filled = 0
        for key, shape, dtype in plan:
            if dtype not in SAFETENSORS_TAGS:
                raise ConfigError(f"tensor '{key}' has dtype {dtype}, which safetensors cannot store")
            nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            if shards[-1] and filled + nbytes > max_shard_bytes:
                shards.append([])
                filled = 0
            shards[-1].append((key, tuple(shape), dtype, nbytes))
            filled += nbytes
        count = len(shards)
        names = ["model.safetensors"] if count == 1 else [
            f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        self.files = [self.directory / name for name in names]
        self.slots: dict[str, _Slot] = {}
        self._fds: list[int] = []
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0
        meta = {"format": "pt", **(metadata or {})}
        for name, path, entries in zip(names, self.files, shards, strict=True):
            layout = sorted(entries, key=lambda e: -torch.empty((), dtype=e[2]).element_size())
            header: dict[str, object] = {"__metadata__": meta}
            offset = 0
            offsets = {}
            for key, shape, dtype, nbytes in layout:
                header[key] = {"dtype": SAFETENSORS_TAGS[dtype], "shape": list(shape),
                               "data_offsets": [offset, offset + nbytes]}
                offsets[key] = offset
                offset += nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            data_start = 8 + len(raw)
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
            os.ftruncate(fd, data_start + offset)
            for key, shape, dtype, nbytes in layout:
                self.slots[key] = _Slot(fd, data_start + offsets[key], nbytes, dtype, shape)
                self.weight_map[key] = name
            self.total_bytes += offset
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._drain, name="fb-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._pwrite(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                    self._error = exc

    def _pwrite(self, fd: int, offset: int, tensor: torch.Tensor) -> None:
        view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)

    def _submit(self, fd: int, offset: int, tensor: torch.Tensor) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._pwrite(fd, offset, tensor)
        else:
            self._queue.put((fd, offset, tensor))

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write ``tensor`` (of the planned shape and dtype) at its place in its shard."""
        slot = self.slots[key]
        if tuple(tensor.shape) != slot.shape or tensor.dtype != slot.dtype:
            raise ConfigError(f"tensor '{key}' arrived as {tensor.dtype} {list(tensor.shape)}, "
                              f"planned as {slot.dtype} {list(slot.shape)}")
        self._submit(slot.fd, slot.offset, tensor.contiguous())

    def write_rows(self, key: str, start: int, rows: torch.Tensor, shape: tuple[int, ...]) -> None:
        """Write a block of rows starting at row ``start`` of tensor ``key``."""
        slot = self.slots[key]
        if tuple(shape) != slot.shape or rows.dtype != slot.dtype:
            raise ConfigError(f"tensor '{key}' arrived as {rows.dtype} {list(shape)}, "
                              f"planned as {slot.dtype} {list(slot.shape)}")
        row_bytes = slot.nbytes // max(slot.shape[0], 1)
        self._submit(slot.fd, slot.offset + start * row_bytes, rows.contiguous())

    def patch(self, key: str, flat_index: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite single elements of a tensor already written."""
        slot = self.slots[key]
        itemsize = torch.empty((), dtype=slot.dtype).element_size()
        values = values.to(slot.dtype).reshape(-1)
        for index, value in zip(flat_index.tolist(), values, strict=True):
            self._submit(slot.fd, slot.offset + int(index) * itemsize, value.reshape(1).clone())

    def close(self) -> None:
        """Flush pending writes, close the files and write the index when there are several shards."""
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._error is not None:
            raise self._error
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": self.weight_map}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
