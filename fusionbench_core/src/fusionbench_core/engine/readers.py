"""Lazy tensor readers of each checkpoint format: read one tensor (or a block of its rows) at a time.

The formats' readers live here and depend on nothing else of the engine; :mod:`.sources` (which
also knows LoRA adapters, :mod:`.lora`) opens a path with the right one and re-exports them all.

Every source implements the :class:`~fusionbench_core.protocols.TensorSource` protocol (``keys``,
``info``, ``get``) plus ``get_rows(key, start, stop)``, which reads rows ``start:stop`` of the
tensor's first dimension. The engine reads large tensors in row blocks so that its working memory
stays bounded whatever the tensor size.

Safetensors files are memory-mapped (read-only, shared) after parsing the header ourselves.
``view_rows`` hands out zero-copy read-only tensors over the mapping, which element-wise methods
consume directly (a float32 merge then touches every input byte once, from the page cache);
``get``/``get_rows`` return fresh, writable copies read with ``pread``. ``release`` unmaps a range
from the process's page tables once merged (the page cache keeps it), so mapped input pages do not
pile up in the resident set.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..protocols import TensorInfo, TensorSource

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
"""safetensors dtype tags → torch dtypes (the tags this reader and the writer understand)."""

SAFETENSORS_TAGS: dict[torch.dtype, str] = {dtype: tag for tag, dtype in SAFETENSORS_DTYPES.items()}
"""torch dtypes → safetensors dtype tags."""

for _tag, _name in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                    ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _name):
        SAFETENSORS_DTYPES[_tag] = getattr(torch, _name)
        SAFETENSORS_TAGS[getattr(torch, _name)] = _tag


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def row_count(shape: tuple[int, ...]) -> int:
    """Number of rows a tensor is read in: its first dimension (1 for a scalar)."""
    return shape[0] if shape else 1


def get_rows(source: TensorSource, key: str, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``key`` from any source (falls back to reading the whole tensor)."""
    reader = getattr(source, "get_rows", None)
    if reader is not None:
        return reader(key, start, stop)
    tensor = source.get(key)
    if tensor.dim() == 0:
        return tensor
    return tensor[start:stop].clone() if (start, stop) != (0, tensor.shape[0]) else tensor


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

    def get_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """A detached copy of rows ``start:stop`` of ``key`` (the whole tensor for a scalar)."""
        tensor = self._state[key].detach()
        if tensor.dim() == 0:
            return tensor.clone()
        return tensor[start:stop].clone()


_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if os.uname().sysname == "Linux" else 0)


class _Entry:
    __slots__ = ("file", "dtype", "shape", "begin", "end")

    def __init__(self, file: int, dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int):
        self.file, self.dtype, self.shape, self.begin, self.end = file, dtype, shape, begin, end


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse a safetensors header: ``(header dict, byte offset of the data buffer)``."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            raw = handle.read(length)
            if len(raw) != length:
                raise ValueError("truncated header")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{path}': not a readable safetensors file ({exc})") from exc
    return header, 8 + length


class SafetensorsSource:
    """A :class:`TensorSource` over one or more (sharded) safetensors files, read lazily with ``pread``."""

    def __init__(self, files: list[Path]):
        self.files = [Path(f) for f in files]
        self._fds: list[int] = []
        self._entries: dict[str, _Entry] = {}
        for index, file in enumerate(self.files):
            header, data_start = read_safetensors_header(file)
            size = file.stat().st_size
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                try:
                    dtype = SAFETENSORS_DTYPES[meta["dtype"]]
                    shape = tuple(int(d) for d in meta["shape"])
                    begin, end = (int(x) for x in meta["data_offsets"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ModelLoadError(f"'{file}': tensor '{key}' has an unreadable header entry ({exc})") from exc
                itemsize = torch.empty((), dtype=dtype).element_size()
                if end - begin != math.prod(shape) * itemsize or data_start + end > size or begin < 0:
                    raise ModelLoadError(f"'{file}': tensor '{key}' has data offsets {[begin, end]} that do not "
                                         f"match its shape {list(shape)} or the file size")
                if key in self._entries:
                    raise ModelLoadError(f"'{file}': tensor '{key}' also appears in '{self.files[self._entries[key].file]}'")
                self._entries[key] = _Entry(index, dtype, shape, data_start + begin, data_start + end)
        self._fds = [os.open(str(f), os.O_RDONLY) for f in self.files]
        self._maps: list[mmap.mmap | None] = [None] * len(self.files)

    def __del__(self):
        for fd in getattr(self, "_fds", ()):
            try:
                os.close(fd)
            except OSError:
                pass

    def keys(self) -> list[str]:
        """Tensor names in file order (shard by shard, by data offset)."""
        return sorted(self._entries, key=lambda k: (self._entries[k].file, self._entries[k].begin))

    def info(self, key: str) -> TensorInfo:
        """Shape and dtype from the safetensors header, without reading data."""
        entry = self._entries[key]
        return TensorInfo(entry.shape, dtype_name(entry.dtype))

    def get(self, key: str) -> torch.Tensor:
        """Read ``key`` into a fresh tensor."""
        entry = self._entries[key]
        return self._read(entry, entry.begin, entry.end, entry.shape)

    def get_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Read rows ``start:stop`` of ``key`` (one contiguous byte range) into a fresh tensor."""
        entry = self._entries[key]
        if not entry.shape:
            return self.get(key)
        row_bytes = (entry.end - entry.begin) // max(entry.shape[0], 1)
        shape = (stop - start, *entry.shape[1:])
        return self._read(entry, entry.begin + start * row_bytes, entry.begin + stop * row_bytes, shape)

    def _map(self, index: int) -> mmap.mmap:
        if self._maps[index] is None:
            # Private and writable so a stray in-place write cannot crash the process: it lands in a
            # private copy, which ``release`` discards (the file is never modified).
            self._maps[index] = mmap.mmap(self._fds[index], 0, flags=mmap.MAP_PRIVATE,
                                          prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return self._maps[index]

    def _range(self, key: str, start: int, stop: int) -> tuple[_Entry, int, int, tuple[int, ...]]:
        entry = self._entries[key]
        if not entry.shape:
            return entry, entry.begin, entry.end, ()
        row_bytes = (entry.end - entry.begin) // max(entry.shape[0], 1)
        return (entry, entry.begin + start * row_bytes, entry.begin + stop * row_bytes,
                (stop - start, *entry.shape[1:]))

    def populate(self, key: str, start: int, stop: int) -> None:
        """Map the pages of rows ``start:stop`` in one call (``MADV_POPULATE_READ``) instead of faulting
        them in 4 KiB at a time on first touch; a no-op on kernels without it (before 5.14)."""
        entry, begin, end, _ = self._range(key, start, stop)
        if end <= begin or not _POPULATE_READ:
            return
        page = mmap.PAGESIZE
        first = begin // page * page
        try:
            self._map(entry.file).madvise(_POPULATE_READ, first, end - first)
        except OSError:
            pass

    def view_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """A zero-copy tensor over rows ``start:stop`` of ``key`` in the (private) memory map.

        Treat it as read-only: writes would be seen by later views of the same bytes until
        :meth:`release` drops them.
        """
        entry, begin, end, shape = self._range(key, start, stop)
        itemsize = torch.empty((), dtype=entry.dtype).element_size()
        if end == begin:
            return torch.empty(shape, dtype=entry.dtype)
        flat = torch.frombuffer(self._map(entry.file), dtype=entry.dtype, count=(end - begin) // itemsize,
                                offset=begin)
        return flat.view(shape)

    def release(self, key: str, start: int, stop: int) -> None:
        """Drop the mapped pages of rows ``start:stop`` of ``key`` from this process (they stay cached)
        and discard any private copies written to them."""
        entry, begin, end, _ = self._range(key, start, stop)
        mapping = self._maps[entry.file]
        if mapping is None or end <= begin:
            return
        page = mmap.PAGESIZE
        first = begin // page * page
        last = (end + page - 1) // page * page
        if last > first:
            mapping.madvise(mmap.MADV_DONTNEED, first, last - first)

    def read_into(self, key: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Read rows ``start:stop`` of ``key`` into ``out`` (e.g. a pinned buffer) and return it."""
        entry = self._entries[key]
        row_bytes = (entry.end - entry.begin) // max(row_count(entry.shape), 1)
        begin = entry.begin + start * row_bytes
        self._pread(entry, begin, entry.begin + stop * row_bytes, out)
        return out

    def _read(self, entry: _Entry, begin: int, end: int, shape: tuple[int, ...]) -> torch.Tensor:
        out = torch.empty(shape, dtype=entry.dtype)
        self._pread(entry, begin, end, out)
        return out

    def _pread(self, entry: _Entry, begin: int, end: int, out: torch.Tensor) -> None:
        if end == begin:
            return
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        done = 0
        total = end - begin
        while done < total:
            got = os.preadv(self._fds[entry.file], [view[done:]], begin + done)
            if got <= 0:
                raise ModelLoadError(f"'{self.files[entry.file]}': file ended while reading a tensor")
            done += got


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


def read_json_file(path: Path | str, what: str, required: tuple[str, ...] = ()) -> dict:
    """The JSON object in ``path`` (``what`` names it in errors: "model config", "adapter config"…).

    Raises a one-line :class:`ModelLoadError` naming the file when it cannot be read, is not valid
    JSON, is not an object, or lacks one of the ``required`` keys, so nothing half-parsed is used.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{path}': unreadable {what} ({exc})") from exc
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"'{path}': {what} is not valid JSON ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"'{path}': {what} is not a JSON object (got {type(loaded).__name__})")
    missing = [key for key in required if key not in loaded]
    if missing:
        raise ModelLoadError(f"'{path}': {what} lacks the key '{missing[0]}'")
    return loaded


def open_sharded(index_path: Path | str) -> SafetensorsSource:
    """The shards of a ``*.safetensors.index.json``, checked against its ``weight_map``.

    Every shard the index names must exist, and every tensor must sit in the shard the index names
    for it, with no tensor left out of the index; otherwise a one-line :class:`ModelLoadError` names
    the index file.
    """
    index_path = Path(index_path)
    index = read_json_file(index_path, "safetensors index", required=("weight_map",))
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ModelLoadError(f"'{index_path}': 'weight_map' is not a non-empty mapping of tensor names to shard files")
    files = sorted({index_path.parent / name for name in weight_map.values()})
    for file in files:
        if not file.is_file():
            raise ModelLoadError(f"'{index_path}': names shard '{file.name}', which does not exist")
    source = SafetensorsSource(files)
    for key, name in weight_map.items():
        entry = source._entries.get(key)
        if entry is None or source.files[entry.file].name != Path(name).name:
            raise ModelLoadError(f"'{index_path}': tensor '{key}' is not in shard '{name}' as the index says")
    extra = sorted(set(source._entries) - set(weight_map))
    if extra:
        raise ModelLoadError(f"'{index_path}': shard '{source.files[source._entries[extra[0]].file].name}' holds "
                             f"tensor '{extra[0]}', which the index does not list")
    return source


_FAST_PATHS = ("view_rows", "populate", "release", "read_into")


class RenamedSource:
    """Another source's tensors under other names: ``mapping`` maps each name shown to the inner name.

    Keys come in ``mapping``'s order. ``get_rows`` always reads only the rows asked for (through the
    inner source's own ``get_rows`` when it has one), and each optional fast path of the inner
    source — ``view_rows``, ``populate``, ``release``, ``read_into`` — is forwarded with the name
    translated. A fast path the inner source lacks is absent here too (``hasattr`` is false), which
    is how the engine chooses its read path, so wrapping a source never costs a re-read.
    """

    def __init__(self, inner: TensorSource, mapping: Mapping[str, str]):
        self.inner = inner
        self.mapping = dict(mapping)

    def keys(self) -> list[str]:
        """The names shown, in ``mapping``'s order."""
        return list(self.mapping)

    def info(self, key: str) -> TensorInfo:
        """Shape and dtype of ``key`` from the inner source."""
        return self.inner.info(self.mapping[key])

    def get(self, key: str) -> torch.Tensor:
        """Read ``key``."""
        return self.inner.get(self.mapping[key])

    def get_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``key``."""
        return get_rows(self.inner, self.mapping[key], start, stop)

    def __getattr__(self, name: str):
        if name not in _FAST_PATHS or "inner" not in self.__dict__:
            raise AttributeError(name)
        method = getattr(self.inner, name)
        mapping = self.mapping

        def forward(key: str, *args, **kwargs):
            return method(mapping[key], *args, **kwargs)

        forward.__name__ = name
        forward.__doc__ = f"``{name}`` of the inner source, with ``key`` translated."
        return forward
