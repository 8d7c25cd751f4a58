"""A background reader: tensors are read (and converted, and sent to the GPU) one step ahead.

The engine knows the exact order in which it will consume tensors, so a single thread performs
those reads in that order into a small bounded queue while the main thread computes. ``pread`` and
torch kernels release the GIL, so on two cores reading and arithmetic overlap. With ``device``
``cuda`` the reader lands the bytes in pinned host memory, copies them to the GPU on its own CUDA
stream and converts them there; the consumer waits on an event, so transfer and compute overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..protocols import TensorSource
from .readers import get_rows


@dataclass(frozen=True)
class Read:
    """One read: rows ``start:stop`` of ``key`` from ``source``, converted to ``dtype`` (None: as stored).

    ``hasher`` (optional) receives the key and the raw bytes before conversion. ``writable=False``
    allows a read-only zero-copy view of a memory-mapped source when no conversion is needed.
    """

    source: TensorSource
    key: str
    start: int
    stop: int
    dtype: torch.dtype | None
    hasher: Any = None
    writable: bool = True


class TensorReader:
    """Performs ``reads`` in order on a background thread; iterate to receive the tensors in order."""

    def __init__(self, reads: Iterable[Read], *, device: torch.device | str = "cpu", depth: int = 2,
                 background: bool = True):
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=self.device) if self._cuda else None
        self._reads = iter(reads)
        self._background = background
        self._stop = threading.Event()
        if background:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="fb-reader", daemon=True)
            self._thread.start()

    def _load(self, read: Read) -> Any:
        if self._cuda and hasattr(read.source, "read_into"):
            info = read.source.info(read.key)
            shape = (read.stop - read.start, *info.shape[1:]) if info.shape else ()
            raw = torch.empty(shape, dtype=getattr(torch, info.dtype), pin_memory=True)
            read.source.read_into(read.key, read.start, read.stop, raw)
        elif hasattr(read.source, "view_rows"):
            populate = getattr(read.source, "populate", None)
            if populate is not None:
                populate(read.key, read.start, read.stop)
            raw = read.source.view_rows(read.key, read.start, read.stop)
        else:
            raw = get_rows(read.source, read.key, read.start, read.stop)
        if read.hasher is not None:
            read.hasher.update(read.key.encode() + b"\0")
            read.hasher.update(memoryview(raw.contiguous().reshape(-1).view(torch.uint8).numpy()))
        if not self._cuda:
            mapped = hasattr(read.source, "view_rows")
            if read.dtype is not None and raw.dtype != read.dtype:
                return raw.to(read.dtype)
            return raw.clone() if mapped and read.writable else raw
        if not raw.is_pinned():
            raw = raw.pin_memory()
        with torch.cuda.stream(self._stream):
            on_device = raw.to(self.device, non_blocking=True)
            if read.dtype is not None:
                on_device = on_device.to(read.dtype)
            event = torch.cuda.Event()
            event.record(self._stream)
        return on_device, event

    def _run(self) -> None:
        try:
            for read in self._reads:
                item = ("ok", self._load(read))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(("error", exc))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self._background:
            status, item = self._queue.get()
            if status == "end":
                raise StopIteration
            if status == "error":
                raise item
        else:
            item = self._load(next(self._reads))
        if self._cuda:
            tensor, event = item
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            tensor.record_stream(current)
            return tensor
        return item

    def close(self) -> None:
        """Stop the background thread (after an error on the consumer's side)."""
        self._stop.set()
        if self._background:
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass


def take(reader: TensorReader, count: int, consumed: list[int]) -> Iterator[torch.Tensor]:
    """Yield the next ``count`` tensors of ``reader``; ``consumed[0]`` counts how many were taken."""
    for _ in range(count):
        consumed[0] += 1
        yield next(reader)


def drain(reader: TensorReader, count: int, consumed: list[int]) -> None:
    """Skip what a consumer did not take of its ``count`` tensors, keeping the reader in step."""
    for _ in range(count - consumed[0]):
        next(reader)

