"""The result store: schema versioning, migration, concurrent writers, compact predictions (no torch)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from fusionbench_core.experiments import store as store_module
from fusionbench_core.experiments.store import ResultStore, StoreError, open_store, pack_ints, unpack_ints


def report(method="task_arithmetic", lam=0.3, seed=0, test=(0.5, 0.7), val=(0.6, 0.8), preds=True):
    """A run report as `run.execute(..., splits=("validation", "test"), predictions=True)` returns it."""
    splits = {"test": {"tasks": {"a": {"accuracy": test[0]}, "b": {"accuracy": test[1]}},
                       "average": {"accuracy": sum(test) / 2}},
              "validation": {"tasks": {"a": {"accuracy": val[0]}, "b": {"accuracy": val[1]}},
                             "average": {"accuracy": sum(val) / 2}}}
    out = {"method": method, "hyperparameters": {"scaling_factor": lam}, "modelpool": {"name": "toy", "seed": 1},
           "taskpool": {"name": "toy", "seed": 1}, "tasks": splits["test"]["tasks"],
           "average": splits["test"]["average"], "cost": {"wall_s": 1.5}, "seed": seed,
           "versions": {"fusionbench-core": "0.1.0"}, "split": "test", "splits": splits}
    if preds:
        out["predictions"] = {"test": {"a": {"predicted": [0, 1, 2, 1], "target": [0, 1, 1, 1]}}}
    return out


def test_round_trip_of_a_run(tmp_path):
    with open_store(tmp_path / "r.sqlite3") as store:
        run_id = store.add("k" * 64, report(), sweep="s1")
        assert store.add("k" * 64, report(lam=9.0)) is None  # a stored key is never written twice
        rows = store.runs()
        assert [r["id"] for r in rows] == [run_id]
        row = rows[0]
        assert row["hyperparameters"] == {"scaling_factor": 0.3}
        assert row["modelpool"] == {"name": "toy", "seed": 1}
        assert row["test_accuracy"] == pytest.approx(0.6) and row["validation_accuracy"] == pytest.approx(0.7)
        assert row["wall_s"] == 1.5 and row["sweep"] == "s1"
        assert store.metrics([run_id])[run_id]["validation"]["b"] == {"accuracy": 0.8}
        assert store.predictions(run_id, "test") == {"a": {"predicted": [0, 1, 2, 1], "target": [0, 1, 1, 1]}}
        assert "predictions" not in store.report(run_id)  # kept in their own table only
        assert store.find("k" * 8)["id"] == run_id and store.find(str(run_id))["id"] == run_id
        with pytest.raises(StoreError, match="no run 'zzzzzzzz'"):
            store.find("zzzzzzzz")
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.schema_version() == store_module.SCHEMA_VERSION


def test_pack_ints_is_compact_and_lossless():
    values = [i % 7 for i in range(10_000)]
    blob = pack_ints(values)
    assert unpack_ints(blob) == values
    assert len(blob) < 1000  # 40 kB of int32 compress well below 1 kB


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite3"
    ResultStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    understood = store_module.SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"schema version 99, newer than this fusionbench-core understands \({understood}\)"):
        ResultStore(path)
    with pytest.raises(StoreError, match="schema version 99"):
        ResultStore(path, readonly=True)


def test_older_schema_is_migrated(tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite3"
    with open_store(path) as store:
        store.add("a" * 64, report())
    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(store_module, "MIGRATIONS", {current: "ALTER TABLE runs ADD COLUMN note TEXT"})
    with open_store(path) as store:
        assert store.schema_version() == current + 1
        columns = [row[1] for row in store.db.execute("PRAGMA table_info(runs)")]
        assert "note" in columns
        assert len(store.runs()) == 1  # the data survived


def test_missing_migration_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite3"
    ResultStore(path).close()
    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 2)
    monkeypatch.setattr(store_module, "MIGRATIONS", {})
    with pytest.raises(StoreError, match=f"no migration from schema version {current}"):
        ResultStore(path)


def test_a_failed_transaction_records_nothing(tmp_path):
    with open_store(tmp_path / "r.sqlite3") as store:
        bad = report()
        bad["splits"]["test"]["tasks"]["a"] = {"accuracy": object()}  # not a number: skipped, not stored
        bad["predictions"] = {"test": {"a": {"predicted": [1, 2], "target": None}}}  # fails inside the transaction
        with pytest.raises(TypeError):
            store.add("b" * 64, bad)
        assert store.runs() == [] and store.db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0


WRITER = textwrap.dedent("""
    import sys
    from fusionbench_core.experiments.store import open_store
    tag, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    report = {"method": "m" + tag, "hyperparameters": {}, "modelpool": {"name": "toy"}, "taskpool": {"name": "toy"},
              "tasks": {f"t{j}": {"accuracy": 0.5} for j in range(20)}, "average": {"accuracy": 0.5},
              "cost": {}, "seed": 0, "versions": {},
              "predictions": {"test": {f"t{j}": {"predicted": list(range(500)), "target": list(range(500))}
                                       for j in range(20)}}}
    for i in range(n):
        with open_store(path) as store:
            store.add(f"{tag}-{i:04d}", {**report, "seed": i})
    assert "torch" not in sys.modules
""")


def test_two_processes_writing_at_once_never_corrupt_the_store(tmp_path):
    path = tmp_path / "shared.sqlite3"
    ResultStore(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, tag, "40", str(path)], stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with open_store(path) as store:
        assert store.check() == "ok"
        runs = store.runs()
        assert len(runs) == 80
        assert {r["method"] for r in runs} == {"ma", "mb"}
        assert store.db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 80 * 20
        assert store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 80 * 20
        last = runs[-1]["id"]
        assert store.predictions(last)["t3"]["predicted"] == list(range(500))
