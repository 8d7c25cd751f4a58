"""The result store: every run of ``fb sweep`` in one SQLite database (standard library ``sqlite3``).

The database lives at ``$FUSIONBENCH_CACHE/results.sqlite3`` unless ``--store PATH`` (or the
``FUSIONBENCH_STORE`` variable) says otherwise. It runs in WAL mode with a busy timeout, and every
run is written in one ``BEGIN IMMEDIATE`` transaction, so several writers (two sweeps at once) never
corrupt it and a reader never sees half a run. A run whose cell key is already stored is not written again.

A new store is made complete (schema, WAL mode) under a temporary name and linked into place, so two
processes creating one store at the same moment both open the same finished database. Commands
that only read (``fb table``, ``results``, ``compare``, ``plot``, ``report``) open it read-only
(``readonly=True``) and refuse a path where no store exists. Every SQLite error is raised as a
one-line :class:`StoreError` naming the store and the cause.

Schema (version :data:`SCHEMA_VERSION`; see ``docs/experiments.md``):

- ``schema_version(version)``: one row;
- ``runs``: one row per run: its cell key, sweep name, method, hyperparameters (JSON), model pool and
  task pool (name and options, JSON), seed, the split ``tasks`` was scored on (the task pool's
  ``split``: a run of a pool set to score validation is a validation run), the test and
  validation averages, cost and versions (JSON), the whole report (JSON), when it was recorded;
- ``metrics(run_id, split, task, metric, value)``: per-task metrics of each scored split;
- ``predictions(run_id, split, task, n, predicted, target)``: per-example predicted classes and
  labels, each a zlib-compressed little-endian int32 array.

A database whose schema is older is migrated in place (:data:`MIGRATIONS`); a newer one is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import FusionBenchError

__all__ = ["SCHEMA_VERSION", "ResultStore", "StoreError", "check_store_path", "default_store_path", "open_store"]

SCHEMA_VERSION = 2
"""The schema this code writes; older databases are migrated, newer ones refused."""

STORE_FILE = "results.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_key TEXT NOT NULL UNIQUE,
    sweep TEXT,
    kind TEXT NOT NULL DEFAULT 'fused',
    method TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    modelpool TEXT NOT NULL,
    modelpool_options TEXT NOT NULL,
    taskpool TEXT NOT NULL,
    taskpool_options TEXT NOT NULL,
    seed INTEGER NOT NULL,
    split TEXT NOT NULL,
    test_accuracy REAL,
    validation_accuracy REAL,
    wall_s REAL,
    cost TEXT NOT NULL,
    versions TEXT NOT NULL,
    report TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (modelpool, taskpool, method);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    split TEXT NOT NULL,
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, split, task, metric)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    split TEXT NOT NULL,
    task TEXT NOT NULL,
    n INTEGER NOT NULL,
    predicted BLOB NOT NULL,
    target BLOB NOT NULL,
    PRIMARY KEY (run_id, split, task)
);
"""

_MISRECORDED = ("split = 'test' AND json_extract(taskpool_options, '$.split') IS NOT NULL"
                " AND json_extract(taskpool_options, '$.split') != 'test' AND json_extract(report, '$.splits') IS NULL")
"""Schema-1 runs of a task pool set to another split (``-s taskpool.split=validation``), recorded as test runs."""

MIGRATIONS: dict[int, str] = {
    # 1 → 2: schema 1 recorded a run of a pool scoring another split (fb run -s taskpool.split=validation)
    # under the test split; its metrics, predictions and averages move to the split it scored.
    1: f"""
    UPDATE metrics SET split = (SELECT json_extract(r.taskpool_options, '$.split') FROM runs r WHERE r.id = run_id)
        WHERE split = 'test' AND run_id IN (SELECT id FROM runs WHERE {_MISRECORDED});
    UPDATE predictions SET split = (SELECT json_extract(r.taskpool_options, '$.split') FROM runs r WHERE r.id = run_id)
        WHERE split = 'test' AND run_id IN (SELECT id FROM runs WHERE {_MISRECORDED});
    UPDATE runs SET
        validation_accuracy = CASE WHEN json_extract(taskpool_options, '$.split') = 'validation'
                                   THEN test_accuracy ELSE validation_accuracy END,
        test_accuracy = NULL,
        report = json_set(report, '$.split', json_extract(taskpool_options, '$.split')),
        split = json_extract(taskpool_options, '$.split')
        WHERE {_MISRECORDED}
    """,
}
"""``{from_version: SQL}``: the script that takes a database from ``from_version`` to the next one."""

KINDS = ("fused", "individual", "pretrained")
"""What a run scored: a fused model, each fine-tuned model on its own task, or the pretrained model."""


class StoreError(FusionBenchError):
    """The result store cannot be opened, is of a newer schema, or lacks a run asked for."""


def default_store_path() -> Path:
    """``$FUSIONBENCH_CACHE/results.sqlite3`` (default ``~/.cache/fusionbench/results.sqlite3``)."""
    from ..hub import cache_dir

    return cache_dir() / STORE_FILE


def pack_ints(values: Iterable[int]) -> bytes:
    """A zlib-compressed little-endian int32 array."""
    data = array("i", values)
    if sys.byteorder != "little":
        data.byteswap()
    return zlib.compress(data.tobytes(), 6)


def unpack_ints(blob: bytes) -> list[int]:
    """The inverse of :func:`pack_ints`."""
    data = array("i")
    data.frombytes(zlib.decompress(blob))
    if sys.byteorder != "little":
        data.byteswap()
    return data.tolist()


def _guarded(method: Any) -> Any:
    """Run a :class:`ResultStore` method under its ``_guard``: SQLite errors become one line naming the store."""
    import functools

    @functools.wraps(method)
    def wrapper(self: ResultStore, *args: Any, **kwargs: Any) -> Any:
        with self._guard():
            return method(self, *args, **kwargs)

    return wrapper


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class ResultStore:
    """One open result store; use :func:`open_store` (a context manager) or call :meth:`close`.

    ``readonly`` (the read commands): the store must exist; it is opened read-only (a store of an
    older schema is migrated first, the one write a read command may make). Otherwise a missing
    store is created.
    """

    def __init__(self, path: Path | str | None = None, *, timeout: float = 60.0, readonly: bool = False):
        self.path = store_path_from_env(path)
        self.timeout = timeout
        self.readonly = readonly
        check_store_path(self.path, must_exist=readonly)
        self.db: sqlite3.Connection | None = None
        with self._guard():
            if readonly:
                self._open_readonly()
            else:
                if not self.path.exists():
                    self._create()
                self._connect()
                self._prepare()

    # -- opening

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn any SQLite or OS error into one line naming the store and the cause."""
        try:
            yield
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(store_error_text(self.path, exc)) from exc

    def _connect(self, *, readonly: bool = False) -> None:
        if readonly:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        else:
            self.db = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        if not readonly:
            self._wal(self.db)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA synchronous = NORMAL")

    def _wal(self, db: sqlite3.Connection) -> None:
        """WAL mode; switching needs a moment alone with the file, so a busy store is retried, not failed."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(0.2, delay * 2)

    def _create(self) -> None:
        """Make the store complete under a temporary name, then link it into place (the first to link wins)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            db = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                self.db = db
                self._prepare()
            finally:
                db.close()
                self.db = None
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created the store at the same moment: use theirs
            except OSError:
                # A file system without hard links: rename, unless the store appeared meanwhile.
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                if leftover.exists():
                    leftover.unlink()

    def _open_readonly(self) -> None:
        self._connect(readonly=True)
        version = self._version()
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version < SCHEMA_VERSION:
            self.db.close()
            self._connect()
            self._prepare()
            self.db.close()
            self._connect(readonly=True)

    def _version(self) -> int:
        row = None
        try:
            row = self.db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        if row is None:
            raise StoreError(f"result store '{self.path}' is not a FusionBench result store (no schema version)")
        return int(row[0])

    def _newer(self, version: int) -> StoreError:
        return StoreError(
            f"result store '{self.path}' has schema version {version}, newer than this "
            f"fusionbench-core understands ({SCHEMA_VERSION}); upgrade fusionbench-core or use another --store")

    # -- schema

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error, ``KeyboardInterrupt`` included)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @_guarded
    def schema_version(self) -> int:
        """The version recorded in the database."""
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0])

    def _prepare(self) -> None:
        with self._guard(), self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                for statement in _statements(SCHEMA):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise StoreError(f"result store '{self.path}': no migration from schema version {version}")
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                version += 1
            db.execute("UPDATE schema_version SET version = ?", (version,))

    def close(self) -> None:
        """Close the connection."""
        if self.db is not None:
            self.db.close()

    # -- writing

    @_guarded
    def has(self, cell_key: str) -> bool:
        """Whether a run with this cell key is stored."""
        return self.db.execute("SELECT 1 FROM runs WHERE cell_key = ?", (cell_key,)).fetchone() is not None

    @_guarded
    def keys(self) -> set[str]:
        """Every stored cell key."""
        return {row[0] for row in self.db.execute("SELECT cell_key FROM runs")}

    @_guarded
    def add(self, cell_key: str, report: Mapping[str, Any], *, sweep: str | None = None,
            kind: str = "fused") -> int | None:
        """Record one run's report in one transaction; returns its id, or ``None`` when the key was stored already.

        ``report`` is what :func:`fusionbench_core.run.execute` returns (with ``splits`` and
        ``predictions`` when it was asked for them); its ``predictions`` go to their own table and
        are not repeated in the stored report.
        """
        if kind not in KINDS:
            raise StoreError(f"run kind must be one of {', '.join(KINDS)}, got '{kind}'")
        report = dict(report)
        predictions = report.pop("predictions", None) or {}
        # A report that does not say what it scored: the task pool's split option, else the test split.
        main_split = str(report.get("split") or (report.get("taskpool") or {}).get("split") or "test")
        splits = report.get("splits") or {main_split: {"tasks": report.get("tasks", {}),
                                                       "average": report.get("average", {})}}
        modelpool = dict(report.get("modelpool") or {})
        taskpool = dict(report.get("taskpool") or {})
        cost = report.get("cost") or {}

        def accuracy(split: str) -> float | None:
            value = (splits.get(split) or {}).get("average", {}).get("accuracy")
            return float(value) if value is not None else None

        row = (
            cell_key, sweep, kind, report.get("method", ""), _json(report.get("hyperparameters") or {}),
            modelpool.pop("name", ""), _json(modelpool), taskpool.pop("name", ""), _json(taskpool),
            int(report.get("seed", 0)), main_split, accuracy("test"), accuracy("validation"),
            cost.get("wall_s"), _json(cost), _json(report.get("versions") or {}), _json(report),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (cell_key, sweep, kind, method, hyperparameters, modelpool, modelpool_options,"
                " taskpool, taskpool_options, seed, split, test_accuracy, validation_accuracy, wall_s, cost,"
                " versions, report, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(cell_key) DO NOTHING", row)
            if cursor.rowcount == 0:
                return None
            run_id = cursor.lastrowid
            db.executemany(
                "INSERT INTO metrics (run_id, split, task, metric, value) VALUES (?, ?, ?, ?, ?)",
                [(run_id, split, task, metric, float(value))
                 for split, result in splits.items()
                 for task, metrics in (result.get("tasks") or {}).items()
                 for metric, value in metrics.items() if isinstance(value, (int, float))])
            db.executemany(
                "INSERT INTO predictions (run_id, split, task, n, predicted, target) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, split, task, len(p["predicted"]), pack_ints(p["predicted"]), pack_ints(p["target"]))
                 for split, tasks in predictions.items() for task, p in tasks.items()])
        return run_id

    # -- reading

    @_guarded
    def runs(self, *, method: str | None = None, suite: str | None = None, sweep: str | None = None,
             kind: str | None = "fused", ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Stored runs (without their full reports), oldest first, filtered by the arguments given.

        ``suite`` matches the model pool or the task pool's name; ``kind=None`` returns every kind.
        """
        clauses, args = [], []
        for column, value in (("method", method), ("sweep", sweep), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if suite is not None:
            clauses.append("(modelpool = ? OR taskpool = ?)")
            args += [suite, suite]
        if ids is not None:
            ids = list(ids)
            clauses.append(f"id IN ({', '.join('?' * len(ids))})")
            args += ids
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            "SELECT id, cell_key, sweep, kind, method, hyperparameters, modelpool, modelpool_options, taskpool,"
            " taskpool_options, seed, split, test_accuracy, validation_accuracy, wall_s, cost, recorded_at"
            f" FROM runs{where}"
            " ORDER BY id", args).fetchall()
        out = []
        for row in rows:
            (run_id, key, sweep_name, run_kind, run_method, hps, mp, mp_opts, tp, tp_opts, seed, split,
             test_acc, val_acc, wall, cost, recorded) = row
            out.append({
                "id": run_id, "key": key, "sweep": sweep_name, "kind": run_kind, "method": run_method,
                "hyperparameters": json.loads(hps), "modelpool": {"name": mp, **json.loads(mp_opts)},
                "taskpool": {"name": tp, **json.loads(tp_opts)}, "seed": seed, "split": split,
                "test_accuracy": test_acc, "validation_accuracy": val_acc, "wall_s": wall,
                "cost": json.loads(cost), "recorded_at": recorded,
            })
        return out

    @_guarded
    def metrics(self, run_ids: Iterable[int]) -> dict[int, dict[str, dict[str, dict[str, float]]]]:
        """``{run_id: {split: {task: {metric: value}}}}`` for the runs given."""
        ids = list(run_ids)
        out: dict[int, dict[str, dict[str, dict[str, float]]]] = {i: {} for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for run_id, split, task, metric, value in self.db.execute(
                    "SELECT run_id, split, task, metric, value FROM metrics"
                    f" WHERE run_id IN ({', '.join('?' * len(chunk))})"
                    " ORDER BY rowid", chunk):
                out[run_id].setdefault(split, {}).setdefault(task, {})[metric] = value
        return out

    @_guarded
    def find(self, ref: str | int) -> dict[str, Any]:
        """One run by id, or by a unique prefix of its cell key (at least 6 characters)."""
        text = str(ref)
        if text.isdigit():
            rows = self.runs(ids=[int(text)], kind=None)
        elif len(text) >= 6:
            ids = [r[0] for r in self.db.execute("SELECT id FROM runs WHERE cell_key LIKE ?", (text + "%",))]
            if len(ids) > 1:
                raise StoreError(f"run '{text}' is ambiguous in result store '{self.path}': "
                                 f"{len(ids)} cell keys start so")
            rows = self.runs(ids=ids, kind=None) if ids else []
        else:
            rows = []
        if not rows:
            raise StoreError(f"no run '{text}' in result store '{self.path}' "
                             "(give a run id or a cell-key prefix of 6+ characters)")
        return rows[0]

    @_guarded
    def report(self, run_id: int) -> dict[str, Any]:
        """The stored report of one run."""
        row = self.db.execute("SELECT report FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in result store '{self.path}'")
        return json.loads(row[0])

    @_guarded
    def predictions(self, run_id: int, split: str = "test") -> dict[str, dict[str, list[int]]]:
        """``{task: {"predicted": [...], "target": [...]}}`` of one run's split (empty when none were stored)."""
        return {task: {"predicted": unpack_ints(pred), "target": unpack_ints(target)}
                for task, pred, target in self.db.execute(
                    "SELECT task, predicted, target FROM predictions WHERE run_id = ? AND split = ? ORDER BY rowid",
                    (run_id, split))}

    @_guarded
    def check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the database is sound."""
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


@contextmanager
def open_store(path: Path | str | None = None, *, readonly: bool = False) -> Iterator[ResultStore]:
    """Open the store at ``path`` (default: :func:`default_store_path`) and close it afterwards.

    ``readonly``: for commands that only read; the store must exist (see :class:`ResultStore`).
    """
    store = ResultStore(path, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


def check_store_path(path: Path, *, must_exist: bool = False) -> None:
    """Refuse, before anything runs, a store path that is a directory, or (``must_exist``) that holds no store."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"result store '{path}' is a directory, not a database file")
    if must_exist and not path.exists():
        raise StoreError(f"result store '{path}' does not exist (fb sweep and fb run create one; "
                         "check --store and $FUSIONBENCH_STORE)")


def store_error_text(path: Path, exc: BaseException) -> str:
    """``result store 'PATH': CAUSE``, in one line, with what a full disk or a busy store means."""
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        cause = exc.strerror + (f": '{exc.filename}'" if exc.filename else "")
    text = f"result store '{path}': {cause}"
    lowered = cause.lower()
    if "disk is full" in lowered or "no space" in lowered:
        text += f" (the file system holding '{path.parent}' has no space left; free some, then rerun to resume)"
    elif "locked" in lowered or "busy" in lowered:
        text += " (another process held it too long; rerun)"
    elif "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
        text += " (no permission to write it)"
    return text


def store_path_from_env(path: Path | str | None) -> Path:
    """``path`` when given, else ``$FUSIONBENCH_STORE`` when set, else :func:`default_store_path`."""
    if path is not None:
        return Path(path)
    env = os.environ.get("FUSIONBENCH_STORE")
    return Path(env) if env else default_store_path()
