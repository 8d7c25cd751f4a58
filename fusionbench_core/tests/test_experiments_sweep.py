"""`fb sweep` on the in-memory tiny suite: cell keys, resume, validation protocol, compare, torch-free CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fusionbench_core.experiments.store import open_store
from fusionbench_core.experiments.sweep import load_spec, plan_cells, run_sweep
from fusionbench_core.plugins import get_host
from fusionbench_core.run import execute as run_execute

SPEC = """
name: tiny-lambda
methods:
  task_arithmetic: {scaling_factor: [0.3, 0.6, 1.0]}
  simple_average: {}
seeds: [0, 1]
suites:
  - {modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SPEC)
    return path


def keys_of(path, text=None):
    if text is not None:
        path.write_text(text)
    cells, refs = plan_cells(load_spec(path), get_host())
    return [c.key for c in cells], refs


def test_cell_keys_change_with_config_seed_and_input(spec_file, monkeypatch):
    keys, refs = keys_of(spec_file)
    assert len(keys) == 8 and len(set(keys)) == 8  # 3 λ × 2 seeds + 1 × 2 seeds, all distinct
    assert keys_of(spec_file)[0] == keys  # stable
    # The default of a hyperparameter written out gives the same key as leaving it out.
    same = SPEC.replace("simple_average: {}", "simple_average: {}\n  ties: {scaling_factor: 0.3}")
    more = keys_of(spec_file, same)[0]
    assert more[:8] == keys
    explicit = keys_of(spec_file, same.replace("ties: {scaling_factor: 0.3}",
                                               "ties: {scaling_factor: 0.3, density: 0.2}"))[0]
    assert explicit == more  # density=0.2 is ties' default
    # A changed hyperparameter, seed, pool option or split protocol changes the key.
    assert keys_of(spec_file, SPEC.replace("0.3, 0.6", "0.35, 0.6"))[0][0] != keys[0]
    assert keys_of(spec_file, SPEC.replace("[0, 1]", "[0, 2]"))[0][1] != keys[1]
    assert keys_of(spec_file, SPEC.replace("n_models: 2}, taskpool", "n_models: 2, seed: 1}, taskpool"))[0][0] != keys[0]
    spec_file.write_text(SPEC)
    test_only = plan_cells(load_spec(spec_file, select_on="test"), get_host())[0]
    assert test_only[0].key != keys[0]
    # Same configuration, different input content (the pool's fingerprint): a different key.
    from fusionbench_core import tiny

    monkeypatch.setattr(tiny.TinyModelPool, "fingerprint", lambda self: "changed")
    assert keys_of(spec_file)[0][0] != keys[0]


def test_sweep_records_cells_and_an_interrupted_sweep_resumes(spec_file, tmp_path):
    spec = load_spec(spec_file)
    calls = []

    def interrupted(config, host, **kwargs):
        calls.append((config.method.name, dict(config.method.options), config.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C inside the third cell
        return run_execute(config, host, **kwargs)

    # reuse=False: every cell through execute (the λ-group path is interrupted in test_experiments_scale).
    with open_store(tmp_path / "r.sqlite3") as store:
        first = run_sweep(spec, store, execute=interrupted, reuse=False)
        assert first.interrupted
        assert first.counts() == {"done": 4, "stored": 0, "left": 6}  # 2 references + 2 cells
        stored = store.runs()
        assert len(stored) == 2 and len(store.runs(kind=None)) == 4  # the third cell left no trace
        done_keys = {r["key"] for r in stored}

        resumed_calls = []

        def counting(config, host, **kwargs):
            resumed_calls.append((config.method.name, dict(config.method.options), config.seed))
            return run_execute(config, host, **kwargs)

        second = run_sweep(spec, store, execute=counting, reuse=False)
        assert not second.interrupted
        assert second.counts() == {"done": 6, "stored": 4, "left": 0}
        # Only the cells left run again, the interrupted one first; the two finished ones do not.
        assert resumed_calls == [("task_arithmetic", {"scaling_factor": 0.6}, 0),
                                 ("task_arithmetic", {"scaling_factor": 0.6}, 1),
                                 ("task_arithmetic", {"scaling_factor": 1.0}, 0),
                                 ("task_arithmetic", {"scaling_factor": 1.0}, 1),
                                 ("simple_average", {}, 0), ("simple_average", {}, 1)]
        assert calls[2] == resumed_calls[0]
        runs = store.runs()
        assert len(runs) == 8 and done_keys <= {r["key"] for r in runs}
        third = run_sweep(spec, store, execute=counting, reuse=False)
        assert third.counts() == {"done": 0, "stored": 10, "left": 0} and len(resumed_calls) == 6

        # What a run stored equals what fb run computes for the same cell.
        ta = next(r for r in runs if r["method"] == "task_arithmetic" and r["hyperparameters"]["scaling_factor"] == 0.6)
        report = store.report(ta["id"])
        assert set(report["splits"]) == {"test", "validation"}
        assert report["cell"]["key"] == ta["key"] and report["cell"]["inputs"]["modelpool"]
        preds = store.predictions(ta["id"], "test")
        assert set(preds) == {"task0", "task1"} and len(preds["task0"]["predicted"]) == 64
        accuracy = sum(p == t for p, t in zip(preds["task0"]["predicted"], preds["task0"]["target"])) / 64
        assert accuracy == pytest.approx(store.metrics([ta["id"]])[ta["id"]]["test"]["task0"]["accuracy"])
        assert len(store.predictions(ta["id"], "validation")["task1"]["target"]) == 64


def test_fb_sweep_table_compare_end_to_end(spec_file, tmp_path, fb_cli):
    db = str(tmp_path / "r.sqlite3")
    out = fb_cli("sweep", str(spec_file), "--store", db, "--json")
    assert out.exit_code == 0, out.stderr
    assert [r["status"] for r in out.json] == ["done"] * 10
    assert "10 run, 0 already stored, 0 left" in out.stderr
    again = fb_cli("sweep", str(spec_file), "--store", db, "--json")
    assert [r["status"] for r in again.json] == ["stored"] * 10

    table = fb_cli("table", "--store", db, "--json")
    assert table.exit_code == 0, table.stderr
    rows = {r["method"]: r for r in table.json}
    assert set(rows) == {"task_arithmetic", "simple_average", "_individual_", "_pretrained_"}
    # The selected λ is the one with the best mean validation accuracy, recomputed from the listing.
    listed = fb_cli("results", "--store", db, "--method", "task_arithmetic", "--json").json
    by_lambda = {}
    for r in listed:
        by_lambda.setdefault(r["hyperparameters"]["scaling_factor"], []).append(r["validation_accuracy"])
    best = max(sorted(by_lambda), key=lambda lam: sum(by_lambda[lam]) / len(by_lambda[lam]))
    assert rows["task_arithmetic"]["hyperparameters"]["scaling_factor"] == best
    assert rows["_individual_"]["normalised"]["mean"] == pytest.approx(1.0)

    md = fb_cli("table", "--store", db, "-o", str(tmp_path / "t.md"))
    assert md.exit_code == 0 and "selected on the validation split" in (tmp_path / "t.md").read_text()

    a = next(r["id"] for r in listed if r["hyperparameters"]["scaling_factor"] == 1.0)
    b = fb_cli("results", "--store", db, "--method", "simple_average", "--json").json[0]["id"]
    compared = fb_cli("compare", str(a), str(b), "--store", db, "--resamples", "500", "--json")
    assert compared.exit_code == 0, compared.stderr
    res = compared.json
    acc = {r["id"]: r["test_accuracy"] for r in fb_cli("results", "--store", db, "--json").json}
    assert res["difference"] == pytest.approx(acc[a] - acc[b])
    assert res["lower"] <= res["difference"] <= res["upper"] and res["examples"] == {"task0": 64, "task1": 64}
    assert fb_cli("compare", str(a), str(b), "--store", db, "--resamples", "500", "--json").stdout == compared.stdout


def test_sweep_file_errors_are_one_line(tmp_path, fb_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {task_arithmetic: {scaling_factor: [0.3]}}\nsuites: [tiny]\nseeds: [0]\nselcet_on: test\n")
    out = fb_cli("sweep", str(bad), "--store", str(tmp_path / "r.sqlite3"))
    assert out.exit_code == 1 and "unknown key 'selcet_on'" in out.stderr
    bad.write_text("methods: {task_arithmetic: {scaling_fator: [0.3]}}\nsuites: [tiny]\n")
    out = fb_cli("sweep", str(bad), "--store", str(tmp_path / "r.sqlite3"))
    assert out.exit_code == 1 and "unknown hyperparameter 'scaling_fator'" in out.stderr and "Traceback" not in out.stderr


def test_experiment_commands_never_import_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from fusionbench_core.cli import cli
        from fusionbench_core.experiments.store import ResultStore
        ResultStore(r"{tmp_path / 'r.sqlite3'}").close()
        for args in (["results", "--store", r"{tmp_path / 'r.sqlite3'}", "--json"], ["sweep", "--help"],
                     ["table", "--help"], ["compare", "--help"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        assert 'torch' not in sys.modules, 'an experiment command imported torch'
    """)
    # No plugins: the experiment commands alone must stay torch-free (plugins are checked by test_cli).
    env = {**os.environ, "FUSIONBENCH_LOAD_PLUGINS": ""}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def _count(db):
    import sqlite3

    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM runs WHERE kind = 'fused'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _run_until(args, db, at_least, sig):
    import signal  # noqa: F401 - the caller passes signal.SIGINT / SIGKILL
    import time

    env = {**os.environ, "FUSIONBENCH_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "fusionbench_core.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _count(db) < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_a_sweep_killed_or_interrupted_for_real_resumes_without_half_cells(tmp_path):
    import signal

    grid = ", ".join(f"{0.01 * i:.2f}" for i in range(1, 121))
    spec = tmp_path / "long.yaml"
    spec.write_text(f"methods: {{task_arithmetic: {{scaling_factor: [{grid}]}}}}\nseeds: [0]\n"
                    "suites: [{modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}]\n")
    db = tmp_path / "r.sqlite3"
    args = ["sweep", str(spec), "--store", str(db), "--json"]
    code, err = _run_until(args, db, 3, signal.SIGINT)
    if code == 0:
        pytest.skip("the sweep finished before it could be interrupted")
    assert code == 130 and "interrupted:" in err and "run the same command to resume" in err
    after_int = _count(db)
    code, err = _run_until(args, db, after_int + 3, signal.SIGKILL)  # power loss: no clean-up at all
    with open_store(db) as store:
        assert store.check() == "ok"
        runs = store.runs()
        killed_at = len(runs)
        # Every recorded cell is whole: 2 tasks × 2 metrics × 2 splits and 2 × 2 prediction rows each.
        assert store.db.execute("SELECT COUNT(*) FROM metrics m JOIN runs r ON r.id = m.run_id "
                                "WHERE r.kind = 'fused'").fetchone()[0] == 8 * killed_at
        assert store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 4 * killed_at
    assert killed_at >= after_int
    done = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FUSIONBENCH_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr
    statuses = [row["status"] for row in json.loads(done.stdout) if row["kind"] == "fused"]
    assert statuses.count("stored") == killed_at and statuses.count("done") == 120 - killed_at
    assert _count(db) == 120
