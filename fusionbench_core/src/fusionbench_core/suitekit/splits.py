"""Seeded, stratified task splits and the on-disk cache of prepared task data, for any modality.

The offline expert suites (mini-vision, mini-text) prepare their tasks from packaged sources with
the same machinery, collected here so each suite keeps only what is specific to its data:

- splitting: :func:`seeded_rng` (one generator per (seed, salt)), :func:`stratified_order` (a
  permutation whose every prefix keeps the class shares), :func:`fit_sizes`,
  :func:`balanced_subset` and :func:`stratified_split` (train / validation / test index arrays);
- identity: :func:`content_digest` (SHA-256 over strings, bytes and arrays) and :func:`split_header`;
- sources: :class:`PackagedSource` (a package and the file that proves it is installed),
  :func:`installed_file`, :func:`data_dir`;
- the cache: :func:`cache_root`, :func:`task_cache_leaf`, :func:`write_directory_atomic` and
  :func:`load_or_build` (build once per settings, write through a temporary sibling renamed into
  place, reuse while the stored settings match).

Only numpy and the standard library are used (no ``datasets``, no torch): a suite passes its own
save / load functions to :func:`load_or_build`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "META_FILE",
    "SPLITS",
    "PackagedSource",
    "Sizes",
    "balanced_subset",
    "cache_root",
    "content_digest",
    "data_dir",
    "fit_sizes",
    "installed_file",
    "load_or_build",
    "seeded_rng",
    "split_header",
    "stratified_order",
    "stratified_split",
    "task_cache_leaf",
    "write_directory_atomic",
]

SPLITS = ("train", "validation", "test")
"""The three splits every prepared task has, in this order."""

META_FILE = "fusionbench_meta.json"
"""The file in a cached task directory that records the settings (and digest) it was built with."""

Sizes = tuple[int, int, int]
"""(train, validation, test) example counts."""

T = TypeVar("T")


# --------------------------------------------------------------------------- splitting


def seeded_rng(seed: int, salt: str) -> np.random.Generator:
    """A numpy generator for one (seed, salt) pair, so tasks sharing a seed are not correlated."""
    import numpy as np

    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(salt.encode())]))


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation in which every prefix holds each class in about its overall share.

    Each class's members get evenly spaced keys ``(rank + jitter) / count`` in a random rank
    order; sorting all keys interleaves the classes in proportion.
    """
    import numpy as np

    key = np.empty(len(labels), dtype=np.float64)
    jitter = rng.random(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        key[idx] = (np.arange(len(idx)) + jitter[idx]) / len(idx)
    return np.argsort(key, kind="stable")


def fit_sizes(sizes: Sizes, available: int) -> Sizes:
    """Shrink ``sizes`` to a pool of ``available`` examples: train first, then validation, then test.

    Raises ``ValueError`` when the pool cannot hold validation + test and still some train
    (unless no train was asked for).
    """
    n_tr, n_va, n_te = sizes
    if n_tr + n_va + n_te <= available:
        return sizes
    new_tr = max(0, available - n_va - n_te)
    if n_tr > 0 and new_tr == 0:
        raise ValueError(f"only {available} examples, too few for validation {n_va} + test {n_te} + some train")
    new_va = min(n_va, available - new_tr)
    return new_tr, new_va, min(n_te, available - new_tr - new_va)


def balanced_subset(labels: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most ``cap`` per class, the smallest cap that still yields ``total``.

    Water filling: rare classes keep all their examples, the others are sampled down to the cap.
    """
    import numpy as np

    counts = np.bincount(labels)
    if counts.sum() <= total:
        return np.arange(len(labels))
    lo, hi = 1, int(counts.max())
    while lo < hi:
        mid = (lo + hi) // 2
        if np.minimum(counts, mid).sum() >= total:
            hi = mid
        else:
            lo = mid + 1
    keep = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if len(idx) <= lo else rng.choice(idx, lo, replace=False))
    return np.sort(np.concatenate(keep))


def stratified_split(
    labels: Sequence[int], sizes: Sizes, rng: np.random.Generator, *, balance: bool = False
) -> tuple[np.ndarray, ...]:
    """Stratified train / validation / test index arrays over a sorted pool (optionally class-balanced).

    Each split is a slice of one :func:`stratified_order`, so its rows are in a stratified random
    order and any prefix keeps the class shares; ``sizes`` shrink by :func:`fit_sizes`.
    """
    import numpy as np

    labels = np.asarray(labels, dtype=np.int64)
    pool = balanced_subset(labels, sum(sizes), rng) if balance else np.arange(len(labels))
    order = pool[stratified_order(labels[pool], rng)]
    n_tr, n_va, n_te = fit_sizes(sizes, len(order))
    return order[:n_tr], order[n_tr : n_tr + n_va], order[n_tr + n_va : n_tr + n_va + n_te]


# --------------------------------------------------------------------------- identity


def split_header(name: str, length: int, class_names: Sequence[str]) -> str:
    """The digest part that names a split: ``"<name>:<rows>:<class names list>"``."""
    return f"{name}:{length}:{list(class_names)}"


def content_digest(parts: Iterable[str | bytes | np.ndarray]) -> str:
    """SHA-256 hex digest over ``parts`` in order: strings as UTF-8, arrays as C-order bytes, bytes as is."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            h.update(part.encode())
        elif isinstance(part, (bytes, bytearray, memoryview)):
            h.update(part)
        else:
            h.update(part.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- sources


def data_dir() -> Path:
    """Directory holding the unpacked npm / .deb sources (``$FUSIONBENCH_DATA_DIR``)."""
    env = os.environ.get("FUSIONBENCH_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fusionbench" / "sources"


def installed_file(dist: str, relpath: str) -> Path | None:
    """A file inside an installed distribution, found without importing it (None if not installed)."""
    try:
        return Path(str(importlib.metadata.distribution(dist).locate_file(relpath)))
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class PackagedSource:
    """One installable package and the file that proves it is there."""

    package: str
    locate: Callable[[], Path | None]

    def missing(self) -> Path | str | None:
        """The missing path (or package) if the source is absent, else None."""
        path = self.locate()
        if path is None:
            return self.package
        return None if path.exists() else path


# --------------------------------------------------------------------------- the cache


def cache_root() -> Path:
    """Root of the FusionBench cache (``$FUSIONBENCH_CACHE``, default ``~/.cache/fusionbench``), not created."""
    env = os.environ.get("FUSIONBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fusionbench"


def task_cache_leaf(name: str, version: str, *, seed: int, sizes: Sizes, default_sizes: Sizes) -> str:
    """Directory name of a prepared task: ``<task>-<version>``, plus ``-seed<N>`` and ``-n<sizes>`` when not default."""
    leaf = f"{name}-{version}"
    if seed != 0:
        leaf += f"-seed{seed}"
    if tuple(sizes) != tuple(default_sizes):
        leaf += "-n" + "-".join(str(n) for n in sizes)
    return leaf


def write_directory_atomic(path: Path, write: Callable[[Path], None], meta: Mapping[str, Any] | None = None) -> None:
    """Fill a temporary sibling of ``path`` with ``write(tmp)`` (+ :data:`META_FILE`), then rename it into place.

    An existing ``path`` is replaced; when another writer renamed its copy first, that copy is kept.
    Readers therefore see a complete directory or none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(dict(meta), indent=1, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.exists():  # not a concurrent writer that won the race
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(
    path: Path,
    meta: Mapping[str, Any],
    build: Callable[[], T],
    *,
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    digest: Callable[[T], str],
    split_sizes: Callable[[T], Mapping[str, int]],
    refresh: bool = False,
) -> T:
    """The prepared data cached at ``path``: loaded when its stored settings equal ``meta``, else built.

    A build is saved with ``save(data, tmp)`` through :func:`write_directory_atomic`, its settings
    recorded with ``digest`` and ``split_sizes`` added, and returned as ``load(path)`` (so the
    caller always gets the cached copy). ``refresh=True`` rebuilds and replaces it.
    """
    meta_file = path / META_FILE
    if not refresh and meta_file.exists():
        stored = json.loads(meta_file.read_text())
        if all(stored.get(k) == v for k, v in meta.items()):
            return load(path)
    data = build()
    record = {**meta, "digest": digest(data), "split_sizes": dict(split_sizes(data))}
    write_directory_atomic(path, lambda tmp: save(data, tmp), record)
    return load(path)
