"""On-disk cache of per-model statistics (Fisher diagonals, Gram matrices), keyed by content.

A statistic depends on the model's weights, the data it was computed on and how it was computed, so
its key is a SHA-256 over exactly those: every tensor of the model (name, dtype, shape, bytes), every
example drawn from the pool (inputs and labels), and the method's settings that change the statistic
(never the merge hyperparameters such as RegMean's α or a merge weight). A sweep over α or λ therefore
computes the statistics once. Files live in ``fusionbench_core.hub.cache_dir("statistics", KIND)`` as
safetensors, written to a temporary name and renamed when complete, and are read back lazily, one
tensor at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fusionbench_core.hub import cache_dir
from fusionbench_core.protocols import TensorSource

FORMAT_VERSION = "2"
"""Bumped whenever the way a statistic is computed changes, so stale files are never reused."""


class Unfingerprintable(TypeError):
    """The pool's data contains an object whose content cannot be hashed reliably."""


def _update(hasher: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{tensor.dtype}{tuple(obj.shape)}".encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        hasher.update(f"M{len(obj)}".encode())
        for key in sorted(obj, key=str):
            hasher.update(f"K{key!s}".encode())
            _update(hasher, obj[key])
    elif isinstance(obj, (list, tuple)):
        hasher.update(f"L{len(obj)}".encode())
        for item in obj:
            _update(hasher, item)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        hasher.update(f"S{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, bytes):
        hasher.update(b"B" + obj)
    elif hasattr(obj, "__array__"):
        import numpy as np

        array = np.ascontiguousarray(np.asarray(obj))
        hasher.update(f"A{array.dtype}{array.shape}".encode())
        hasher.update(array.tobytes())
    else:
        raise Unfingerprintable(type(obj).__name__)


def fingerprint(obj: Any) -> str:
    """SHA-256 of a nested structure of tensors, arrays, mappings, sequences and scalars."""
    hasher = hashlib.sha256()
    _update(hasher, obj)
    return hasher.hexdigest()


def model_fingerprint(source: TensorSource) -> str:
    """SHA-256 over every tensor of one model (name, dtype, shape and bytes), in key order."""
    hasher = hashlib.sha256()
    for key in source.keys():
        hasher.update(f"N{key}".encode())
        _update(hasher, source.get(key))
    return hasher.hexdigest()


def data_fingerprint(batches: list[tuple[Any, Any]]) -> str | None:
    """SHA-256 of the drawn batches, or None when they hold objects that cannot be hashed (no caching)."""
    try:
        return fingerprint(batches)
    except Unfingerprintable as exc:
        print(f"warning: statistics not cached: cannot fingerprint data of type {exc}", file=sys.stderr)
        return None


class LazyTensors(Mapping):
    """A read-only mapping over one safetensors file that reads each tensor when asked."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = safe_open(str(path), framework="pt")
        self._keys = list(self._handle.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class StatisticsCache:
    """Statistics of one kind (``"fisher"``, ``"gram"``) on disk; disabled caches compute every time."""

    def __init__(self, kind: str, enabled: bool = True):
        self.kind = kind
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts: Any) -> str:
        """The cache key of a statistic: SHA-256 of its defining parts (model and data fingerprints, settings)."""
        text = json.dumps({"version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Where the statistic with ``key`` lives."""
        return cache_dir("statistics", self.kind) / f"{key}.safetensors"

    def get_or_compute(self, key: str | None,
                       compute: Callable[[], dict[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
        """The cached statistic for ``key``, or ``compute()``'s result, stored for next time.

        ``key=None`` (data that cannot be fingerprinted) or a disabled cache always computes.
        """
        if not self.enabled or key is None:
            self.misses += 1
            return compute()
        path = self.path(key)
        if path.exists():
            try:
                lazy = LazyTensors(path)
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
                path.unlink(missing_ok=True)
            else:
                self.hits += 1
                return lazy
        self.misses += 1
        stats = compute()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file({name: tensor.detach().cpu().contiguous() for name, tensor in stats.items()}, str(tmp),
                      metadata={"kind": self.kind, "version": FORMAT_VERSION})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return stats
