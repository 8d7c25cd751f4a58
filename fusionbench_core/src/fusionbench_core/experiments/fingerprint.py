"""Input fingerprints of pools that read checkpoints and datasets by hub id (the CLIP and GLUE suites).

A pool offering :class:`~fusionbench_core.protocols.Fingerprinted` puts its fingerprint into the key
of every cell and ``fb run`` it takes part in, so a run is reused only when the inputs are the same
bytes. For a pool that reads hub ids this module computes one: :func:`inputs_fingerprint` hashes,
input by input (in the order given), its role, its id and the digest of what that id resolves to:

- a **local copy** (the id is a path, or ``<root>/<id>`` exists under ``FUSIONBENCH_MODEL_ROOT`` /
  ``FUSIONBENCH_DATA_ROOT``, as :mod:`fusionbench_core.hub` resolves it): for checkpoints, the SHA-256
  of every file's bytes with its path relative to the copy; for datasets (often many gigabytes), the
  relative paths and sizes of the files and the bytes of those up to 1 MiB (metadata, small shards);
- else a copy in the **Hugging Face hub cache**: the revision (commit hash) that ``refs/main`` names,
  which pins every file of the repository;
- else ``unresolved``: the hub will be asked when the model is loaded; the next plan, which finds the
  download, then keys the cell anew (it runs once more rather than reuse a result of unknown inputs).

Digests depend on the bytes alone (not on paths above the copy, sizes of directories or times), so two
machines with the same files agree. Hashing reads each file once: a file's digest is memoised in
``$FUSIONBENCH_CACHE/fingerprints.json`` under its absolute path with its size, modification time and
inode, and recomputed when any of these changes (measured cost: one pass over the files at the disk's
or SHA-256's speed, whichever is slower, the first time; a few milliseconds afterwards).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["file_digest", "inputs_fingerprint", "resolve_input", "tree_digest"]

MEMO_FILE = "fingerprints.json"
SMALL_FILE = 1 << 20
"""Dataset files up to this size are hashed by content; larger ones by path and size."""
SKIPPED = (".cache", ".git", ".locks")
"""Directory names inside a copy that hold no input (download bookkeeping)."""

_memo: dict[str, dict[str, Any]] | None = None
_memo_dirty = False


def _memo_path() -> Path:
    from ..hub import cache_dir

    return cache_dir() / MEMO_FILE


def _load_memo() -> dict[str, dict[str, Any]]:
    global _memo
    if _memo is None:
        try:
            _memo = json.loads(_memo_path().read_text())
            if not isinstance(_memo, dict):
                _memo = {}
        except (OSError, ValueError):
            _memo = {}
    return _memo


def _save_memo() -> None:
    """Write the memo through a temporary file (a lost race only loses memo entries, never a digest's truth)."""
    global _memo_dirty
    if not _memo_dirty or _memo is None:
        return
    path = _memo_path()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_memo, sort_keys=True))
        os.replace(tmp, path)
        _memo_dirty = False
    except OSError:
        pass  # a read-only cache: digests are recomputed next time
    finally:
        if tmp.exists():
            tmp.unlink()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised by absolute path, size, modification time and inode."""
    global _memo_dirty
    path = Path(path)
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    memo = _load_memo()
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    memo[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    _memo_dirty = True
    return memo[key]["sha256"]


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for directory, names, files in os.walk(root, followlinks=True):
        names[:] = sorted(n for n in names if n not in SKIPPED)
        out += [Path(directory) / f for f in sorted(files) if not f.endswith((".lock", ".incomplete"))]
    return out


def tree_digest(root: Path, *, content: str = "all") -> str:
    """SHA-256 over a file or directory: each file's relative path with its content digest.

    ``content="all"`` hashes every file's bytes; ``"small"`` hashes the bytes of files up to
    :data:`SMALL_FILE` and the size of larger ones.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for path in _files(root):
        relative = path.name if root.is_file() else path.relative_to(root).as_posix()
        size = path.stat().st_size
        part = file_digest(path) if content == "all" or size <= SMALL_FILE else f"size:{size}"
        digest.update(f"{relative}\0{part}\n".encode())
    return digest.hexdigest()


def _hub_cache_revision(identifier: str, kind: str) -> str | None:
    """The commit hash ``refs/main`` names in the Hugging Face hub cache for ``identifier``, if it is there."""
    if os.environ.get("HF_HUB_CACHE"):
        cache = Path(os.environ["HF_HUB_CACHE"])
    else:
        try:
            from huggingface_hub import constants

            cache = Path(constants.HF_HUB_CACHE)
        except Exception:  # noqa: BLE001 - no huggingface_hub: its default place
            cache = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    folder = cache / f"{'models' if kind == 'model' else 'datasets'}--{identifier.replace('/', '--')}"
    ref = folder / "refs" / "main"
    try:
        revision = ref.read_text().strip()
    except OSError:
        return None
    return revision or None


def resolve_input(identifier: str, kind: str = "model") -> dict[str, str]:
    """What ``identifier`` (a hub id or a path) resolves to, with its digest: see the module docstring."""
    from ..hub import DATA_ROOT_ENV, MODEL_ROOT_ENV

    env = MODEL_ROOT_ENV if kind == "model" else DATA_ROOT_ENV
    candidates = [Path(identifier).expanduser()]
    candidates += [Path(p).expanduser() / identifier for p in os.environ.get(env, "").split(os.pathsep) if p.strip()]
    for candidate in candidates:
        if candidate.exists():
            return {"local": tree_digest(candidate, content="all" if kind == "model" else "small")}
    revision = _hub_cache_revision(identifier, kind)
    return {"revision": revision} if revision else {"unresolved": identifier}


def inputs_fingerprint(models: Iterable[str] = (), datasets: Iterable[str] = ()) -> str:
    """SHA-256 of what every model (checkpoint or adapter) and dataset id given resolves to."""
    entries = [["model", str(m), resolve_input(str(m), "model")] for m in models]
    entries += [["dataset", str(d), resolve_input(str(d), "dataset")] for d in datasets]
    _save_memo()
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
