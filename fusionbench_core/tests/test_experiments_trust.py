"""Results you can trust (#24): the store records what was run, sweep files are checked before anything
is created, read commands never create a store, outputs never replace a user's file, and the
documented walk-through works in a fresh store."""

from __future__ import annotations

import json
import sqlite3

import pytest

from fusionbench_core.experiments.store import open_store

TINY2 = ("-p", "tiny", "-s", "modelpool.n_models=2", "-s", "taskpool.n_models=2")


def one_line_error(result, *needles):
    """The command failed with one ``Error:`` line that holds every needle, and no traceback."""
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- 1. wrong or stale numbers ------------------------------------------------------------------


def test_a_validation_run_is_stored_as_validation_and_never_on_a_test_leaderboard(fb_cli, tmp_path):
    db = str(tmp_path / "r.sqlite3")
    val = fb_cli("run", *TINY2, "-s", "taskpool.split=validation", "--store", db, "-o", str(tmp_path / "v"), "--json")
    test = fb_cli("run", *TINY2, "--store", db, "-o", str(tmp_path / "t"), "--json")
    assert val.exit_code == 0 and test.exit_code == 0, (val.stderr, test.stderr)
    val_score, test_score = val.json["average"]["accuracy"], test.json["average"]["accuracy"]
    assert val_score != test_score  # otherwise the test could not tell them apart

    rows = {r["taskpool"].get("split", "test"): r for r in fb_cli("results", "--store", db, "--json").json}
    assert rows["validation"]["split"] == "validation"
    assert rows["validation"]["validation_accuracy"] == pytest.approx(val_score)
    assert rows["validation"]["test_accuracy"] is None
    assert rows["test"]["split"] == "test" and rows["test"]["test_accuracy"] == pytest.approx(test_score)
    assert rows["validation"]["key"] != rows["test"]["key"]
    shown = fb_cli("results", "show", str(rows["validation"]["id"]), "--store", db, "--json").json
    assert set(shown["metrics"]) == {"validation"}

    table = fb_cli("table", "--store", db, "--select-on", "test", "--json")
    assert table.exit_code == 0, table.stderr
    (row,) = [r for r in table.json if r["method"] == "task_arithmetic"]
    assert row["average"]["mean"] == pytest.approx(test_score) and row["runs"] == [rows["test"]["id"]]


def test_a_store_that_recorded_a_validation_run_as_test_is_migrated(tmp_path):
    """Schema 1 stores hold `fb run -s taskpool.split=validation` runs under the test split: moved on open."""
    path = tmp_path / "old.sqlite3"
    with open_store(path) as store:
        report = {"method": "ta", "hyperparameters": {}, "modelpool": {"name": "toy"},
                  "taskpool": {"name": "toy", "split": "validation"}, "tasks": {"a": {"accuracy": 0.25}},
                  "average": {"accuracy": 0.25}, "cost": {}, "seed": 0, "versions": {}, "split": "validation"}
        store.add("k-val", report)
        test_report = {**report, "taskpool": {"name": "toy"}, "split": "test", "tasks": {"a": {"accuracy": 0.75}},
                       "average": {"accuracy": 0.75}}
        store.add("k-test", test_report)
    # What schema 1 wrote for the first run: split 'test', the validation score as the test accuracy.
    con = sqlite3.connect(path)
    con.execute("UPDATE runs SET split = 'test', test_accuracy = validation_accuracy, validation_accuracy = NULL "
                "WHERE cell_key = 'k-val'")
    con.execute("UPDATE metrics SET split = 'test' WHERE run_id = (SELECT id FROM runs WHERE cell_key = 'k-val')")
    con.execute("UPDATE schema_version SET version = 1")
    con.commit()
    con.close()
    with open_store(path, readonly=True) as store:  # what fb table does: the migration runs first
        assert store.schema_version() == 2
        runs = {r["key"]: r for r in store.runs()}
        assert runs["k-val"]["split"] == "validation" and runs["k-val"]["test_accuracy"] is None
        assert runs["k-val"]["validation_accuracy"] == pytest.approx(0.25)
        assert store.metrics([runs["k-val"]["id"]])[runs["k-val"]["id"]] == {"validation": {"a": {"accuracy": 0.25}}}
        assert runs["k-test"]["test_accuracy"] == pytest.approx(0.75)  # untouched
        assert store.metrics([runs["k-test"]["id"]])[runs["k-test"]["id"]] == {"test": {"a": {"accuracy": 0.75}}}


SWEEP_OK = "methods: {task_arithmetic: {scaling_factor: [0.3, 0.5]}}\nseeds: [0]\nsuites: [tiny]\n"


@pytest.mark.parametrize("text, needles", [
    ("methods: {task_arithmetic: {scaling_factor: [0.3, 0.3]}}\nsuites: [tiny]\n",
     ("task_arithmetic.scaling_factor", "0.3", "twice")),
    ("methods: {task_arithmetic: {scaling_factor: [0.3, '0.3']}}\nsuites: [tiny]\n",
     ("task_arithmetic", "scaling_factor=0.3", "twice")),
    ("methods: {task_arithmetic: {}}\nseeds: [0.5, 1.5]\nsuites: [tiny]\n", ("seeds", "0.5", "integer")),
    ("methods: {task_arithmetic: {}}\nseeds: [0, true]\nsuites: [tiny]\n", ("seeds", "True", "integer")),
    ("methods: {task_arithmetic: {}}\nseeds: ['1']\nsuites: [tiny]\n", ("seeds", "'1'", "integer")),
    ("methods: {task_arithmetic: {}}\nseeds: [0, 0]\nsuites: [tiny]\n", ("seeds", "0", "twice")),
    ("methods: {task_arithmetic: {}}\nsuites: [tiny]\nreference: maybe\n", ("reference", "true or false")),
    ("methods: {task_arithmetic: {}}\nsuites: [tiny]\nname: [a, b]\n", ("'name'", "text")),
    ("methods: {task_arithmetic: {}}\nsuites: [tiny]\nselect_on: [test]\n", ("select_on",)),
    ("methods: {task_arithmetic: {}}\nsuites: [tinny]\n", ("unknown model pool 'tinny'", "Did you mean: tiny")),
    ("methods: {task_arithmetic: {}}\nsuites: [{modelpool: tiny, taskpool: tinyy}]\n",
     ("unknown task pool 'tinyy'",)),
    ("methods: {task_arithmetic: {}}\nsuites: [tiny, tiny]\n", ("suite 'tiny'", "twice")),
    ("methods: {task_arithmetic: {}, task_arithmetic: {scaling_factor: 0.5}}\nsuites: [tiny]\n",
     ("'task_arithmetic'", "twice")),
    ("methods: {task_arithmetc: {}}\nsuites: [tiny]\n", ("unknown method 'task_arithmetc'",)),
    ("methods: {task_arithmetic: {scaling_factor: [0.3, abc]}}\nsuites: [tiny]\n", ("scaling_factor", "abc")),
    ("methods: {task_arithmetic: {scaling_factor: {a: 1}}}\nsuites: [tiny]\n", ("scaling_factor",)),
])
def test_a_bad_sweep_file_is_one_line_and_creates_no_store(fb_cli, tmp_path, text, needles):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    db = tmp_path / "new" / "r.sqlite3"
    out = fb_cli("sweep", str(spec), "--store", str(db))
    one_line_error(out, *needles)
    assert not db.exists() and not db.parent.exists()


def test_a_good_sweep_file_plans_two_cells(fb_cli, tmp_path):
    spec = tmp_path / "ok.yaml"
    spec.write_text(SWEEP_OK)
    out = fb_cli("sweep", str(spec), "--store", str(tmp_path / "r.sqlite3"), "--dry-run", "--json")
    assert out.exit_code == 0, out.stderr
    assert [r["hyperparameters"].get("scaling_factor") for r in out.json if r["kind"] == "fused"] == [0.3, 0.5]
    assert {r["status"] for r in out.json} == {"left"} and not (tmp_path / "r.sqlite3").exists()  # a plan creates none


def _toy_report(method, lam, seed, test, val=None):
    def split(value):
        return {"tasks": {"a": {"accuracy": value}}, "average": {"accuracy": value}}

    splits = {"test": split(test)}
    if val is not None:
        splits["validation"] = split(val)
    return {"method": method, "hyperparameters": {} if lam is None else {"scaling_factor": lam},
            "modelpool": {"name": "toy"}, "taskpool": {"name": "toy"}, "tasks": split(test)["tasks"],
            "average": split(test)["average"], "cost": {"wall_s": 0.5}, "seed": seed, "versions": {},
            "split": "test", "splits": splits}


def test_table_with_an_unknown_method_is_one_line_with_did_you_mean(fb_cli, tmp_path):
    db = tmp_path / "r.sqlite3"
    with open_store(db) as store:
        store.add("a", _toy_report("ties", 0.3, 0, 0.5, 0.5))
        store.add("b", _toy_report("task_arithmetic", 0.3, 0, 0.4, 0.4))
    one_line_error(fb_cli("table", "--store", str(db), "-m", "tie"), "'tie'", "Did you mean: ties")
    one_line_error(fb_cli("table", "--store", str(db), "-m", "ties", "-m", "weird_method"), "'weird_method'")
    ok = fb_cli("table", "--store", str(db), "-m", "ties", "--json")
    assert ok.exit_code == 0 and [r["method"] for r in ok.json] == ["ties"]


def test_input_fingerprints_follow_the_bytes_not_paths_or_times(tmp_path, monkeypatch):
    import hashlib
    import os
    import shutil

    from fusionbench_core.experiments import fingerprint as fp

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fp, "_memo", None)
    roots = tmp_path / "a", tmp_path / "b"
    model = roots[0] / "owner" / "expert"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\x01" * 1000)
    (model / "config.json").write_text('{"hidden": 4}')
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(roots[0]))
    first = fp.inputs_fingerprint(models=["owner/expert"])
    # By hand: each file's relative path and SHA-256, sorted by path; then the list of inputs.
    files = "".join(f"{name}\0{hashlib.sha256((model / name).read_bytes()).hexdigest()}\n"
                    for name in ("config.json", "model.safetensors"))
    tree = hashlib.sha256(files.encode()).hexdigest()
    assert fp.resolve_input("owner/expert") == {"local": tree}
    assert first == hashlib.sha256(json.dumps([["model", "owner/expert", {"local": tree}]]).encode()).hexdigest()
    # The memo holds each file's digest under its path, size, time and inode.
    memo = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert memo[str((model / "config.json").resolve())]["sha256"] == hashlib.sha256(b'{"hidden": 4}').hexdigest()

    # Another machine: the same bytes under another root, other modification times.
    shutil.copytree(roots[0], roots[1])
    os.utime(roots[1] / "owner" / "expert" / "model.safetensors", (1, 1))
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(roots[1]))
    assert fp.inputs_fingerprint(models=["owner/expert"]) == first
    # Other weights under the same id (same size): another fingerprint.
    (roots[1] / "owner" / "expert" / "model.safetensors").write_bytes(b"\x02" * 1000)
    changed = fp.inputs_fingerprint(models=["owner/expert"])
    assert changed != first
    # A stale memo entry is not trusted: same size, mtime put back, but the inode or time stamp differs.
    os.utime(roots[1] / "owner" / "expert" / "model.safetensors", (1, 1))
    assert fp.inputs_fingerprint(models=["owner/expert"]) == changed

    # Not local: the revision the Hugging Face hub cache resolved; else 'unresolved'.
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(tmp_path / "empty"))
    hub = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert fp.resolve_input("owner/expert") == {"unresolved": "owner/expert"}
    (hub / "models--owner--expert" / "refs").mkdir(parents=True)
    (hub / "models--owner--expert" / "refs" / "main").write_text("0123abcd\n")
    assert fp.resolve_input("owner/expert") == {"revision": "0123abcd"}
    assert fp.resolve_input("owner/data", "dataset") == {"unresolved": "owner/data"}


def test_dataset_fingerprints_hash_small_files_and_the_sizes_of_large_ones(tmp_path, monkeypatch):
    import hashlib

    from fusionbench_core.experiments import fingerprint as fp

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fp, "_memo", None)
    monkeypatch.setattr(fp, "SMALL_FILE", 10)
    data = tmp_path / "data" / "glue"
    data.mkdir(parents=True)
    (data / "info.json").write_text("{}")
    (data / "train.parquet").write_bytes(b"x" * 50)
    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(tmp_path / "data"))
    expected = hashlib.sha256(f"info.json\0{hashlib.sha256(b'{}').hexdigest()}\ntrain.parquet\0size:50\n"
                              .encode()).hexdigest()
    assert fp.resolve_input("glue", "dataset") == {"local": expected}


# -- 2. the documented walk-through -------------------------------------------------------------

DOCS = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "experiments.md"
OTHER_SUITE = ("-p", "tiny", "-s", "modelpool.n_models=4", "-s", "taskpool.n_models=4")
"""Stands in for `fb run`'s default suite (mini-vision trains its experts on first use, minutes on a CPU):
like mini-vision in the issue's store, a suite that no sweep covered."""


def walk_through():
    """The sweep file and the command block at the top of docs/experiments.md, as written."""
    import re

    text = DOCS.read_text()
    spec = re.search(r"## The sweep file\n\n```yaml\n(.*?)```", text, re.S).group(1)
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("fb ")]
    return spec, commands


def test_the_documented_walk_through_runs_as_written_in_a_fresh_store(fb_cli, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import shlex

    spec, commands = walk_through()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONBENCH_STORE", str(tmp_path / "fresh" / "results.sqlite3"))
    (tmp_path / "lambda.yaml").write_text(spec)
    ran = []
    for argv in commands:
        if "--executor" in argv or "every-method.yaml" in argv:
            continue  # Ray (an optional extra, checked in test_experiments_scale) and a file the page does not show
        args = argv[1:] + (list(OTHER_SUITE) if argv[1] == "run" and "-p" not in argv else [])
        out = fb_cli(*args)
        assert out.exit_code == 0, (shlex.join(argv), out.stderr)
        ran.append((argv[1], out))
    assert [name for name, _ in ran] == ["sweep", "sweep", "run", "results", "table", "compare", "plot", "report"]
    outputs = dict(ran)
    # The fb run landed on a suite no sweep covered: its leaderboard says why ties is not shown, as the page says.
    table = outputs["table"].stdout
    assert "tiny[n_models=4]" in table and "Not shown, no validation scores" in table and ": ties." in table
    assert [r["method"] for r in outputs["results"].json].count("ties") == 13  # 2 λ × 3 seeds × 2 suites, and fb run
    assert (tmp_path / "results.html").exists() and list((tmp_path / "figures").glob("*.png"))
    assert "tiny[n_models=4]" in (tmp_path / "results.html").read_text()


# -- 3. the store -------------------------------------------------------------------------------

READ_COMMANDS = [("table",), ("results",), ("results", "list", "--all"), ("results", "show", "1"),
                 ("compare", "1", "2"), ("plot", "-o", "figs"), ("report", "-o", "page.html")]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=[" ".join(c) for c in READ_COMMANDS])
def test_read_commands_refuse_a_store_that_does_not_exist_and_create_nothing(fb_cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo" / "results.sqlite3"
    out = fb_cli(*command, "--store", str(missing))
    one_line_error(out, f"'{missing}'", "does not exist")
    assert not missing.parent.exists()
    monkeypatch.setenv("FUSIONBENCH_STORE", str(missing))  # the variable names a store as --store does
    one_line_error(fb_cli(*command), f"'{missing}'", "does not exist")
    assert not missing.parent.exists() and not (tmp_path / "figs").exists() and not (tmp_path / "page.html").exists()


def test_read_commands_open_the_store_read_only(fb_cli, tmp_path):
    import hashlib

    from fusionbench_core.experiments.store import StoreError

    db = tmp_path / "r.sqlite3"
    with open_store(db) as store:
        store.add("a" * 64, _toy_report("ties", 0.3, 0, 0.5, 0.5))
        store.add("b" * 64, _toy_report("ties", 0.5, 0, 0.6, 0.4))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for command in READ_COMMANDS[:3]:
        assert fb_cli(*command, "--store", str(db)).exit_code == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with open_store(db, readonly=True) as store:
        assert len(store.runs()) == 2
        with pytest.raises(StoreError, match=rf"result store '{db}': attempt to write a readonly database"):
            store.add("c" * 64, _toy_report("ties", 0.7, 0, 0.6, 0.4))


def test_two_processes_creating_one_new_store_at_once_both_succeed(tmp_path):
    """Switching a new database to WAL needs a moment alone with it: the second process used to fail."""
    import subprocess
    import sys
    import time

    code = ("import sys, time\n"
            "from fusionbench_core.experiments.store import ResultStore\n"
            "start = float(sys.argv[2])\n"
            "while time.time() < start: pass\n"
            "store = ResultStore(sys.argv[1]); assert store.keys() == set(); store.close()\n")
    failures = []
    for trial in range(10):
        path = tmp_path / f"s{trial}" / "results.sqlite3"
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(start)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            if proc.returncode:
                failures.append(err.strip().splitlines()[-1])
        with open_store(path) as store:
            assert store.check() == "ok" and store.schema_version() > 0
        assert sorted(p.name for p in path.parent.iterdir()) == ["results.sqlite3"]  # no temporary left
    assert failures == []


def test_a_full_disk_names_the_store_and_the_cause_in_one_line(fb_cli, tmp_path, monkeypatch):
    from fusionbench_core.experiments import store as store_module
    from fusionbench_core.experiments.store import ResultStore, StoreError

    db = tmp_path / "r.sqlite3"
    with open_store(db) as store:
        store.db.execute("PRAGMA max_page_count = %d" % store.db.execute("PRAGMA page_count").fetchone()[0])
        with pytest.raises(StoreError) as caught:
            for i in range(50):
                store.add(f"{i:064d}", _toy_report("ties", 0.3, i, 0.5, 0.5))
    message = str(caught.value)
    assert message.startswith(f"result store '{db}': database or disk is full") and "no space" in message
    assert "\n" not in message

    # Through fb sweep: one Error line, the store named, what was recorded stays.
    original = ResultStore.add

    def full(self, *args, **kwargs):
        self.db.execute("PRAGMA max_page_count = %d" % self.db.execute("PRAGMA page_count").fetchone()[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(store_module.ResultStore, "add", full)
    spec = tmp_path / "s.yaml"
    spec.write_text(SWEEP_OK)
    swept = tmp_path / "swept.sqlite3"
    one_line_error(fb_cli("sweep", str(spec), "--store", str(swept)), f"result store '{swept}'",
                   "database or disk is full")
