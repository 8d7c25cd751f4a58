"""Experiments at scale (#16): the λ-group path, the Ray executor, `fb run` in the store, executor errors."""

from __future__ import annotations

import os
import sqlite3

import pytest

from fusionbench_core.experiments.store import open_store
from fusionbench_core.experiments.sweep import load_spec, run_sweep
from fusionbench_core.plugins import get_host

SPEC = """
name: tiny-reuse
methods:
  task_arithmetic: {scaling_factor: [0.3, 0.6, 1.0]}
  ties: {scaling_factor: [0.5, 1.5], density: 0.5}
  simple_average: {}
seeds: [0, 1]
suites:
  - {modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}
"""
TINY = ("-p", "tiny", "-s", "modelpool.n_models=2", "-s", "taskpool.n_models=2")


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SPEC)
    return path


def stored_metrics(db) -> dict[tuple, float]:
    """Every stored metric value by (cell key, split, task, metric)."""
    con = sqlite3.connect(db)
    try:
        return {row[:4]: row[4] for row in con.execute(
            "SELECT r.cell_key, m.split, m.task, m.metric, m.value FROM metrics m JOIN runs r ON r.id = m.run_id")}
    finally:
        con.close()


def stored_predictions(db) -> dict[tuple, tuple[bytes, bytes]]:
    """Every stored prediction blob by (cell key, split, task)."""
    con = sqlite3.connect(db)
    try:
        return {row[:3]: row[3:] for row in con.execute(
            "SELECT r.cell_key, p.split, p.task, p.predicted, p.target"
            " FROM predictions p JOIN runs r ON r.id = p.run_id")}
    finally:
        con.close()


# -- the λ-group path ------------------------------------------------------------------------------


class _Pool:
    """A float32 model pool of random tensors (pretrained + 3 models) whose models are their state dicts."""

    name = "random"
    has_pretrained = True

    def __init__(self):
        import torch

        gen = torch.Generator().manual_seed(0)
        base = {"w": torch.randn(64, 48, generator=gen), "b": torch.randn(48, generator=gen),
                "ids": torch.arange(5)}
        from fusionbench_core.protocols import PRETRAINED

        self.models = {PRETRAINED: base}
        for i in range(3):
            self.models[f"m{i}"] = {k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
                                    for k, v in base.items()}

    @property
    def model_names(self):
        return ["m0", "m1", "m2"]

    def tensors(self, name):
        from fusionbench_core.engine.sources import StateDictSource

        return StateDictSource(self.models[name])

    def build_model(self, state):
        return dict(state)


@pytest.mark.parametrize("method,settings", [("task_arithmetic", {}), ("ties", {"density": 0.3}),
                                             ("ties", {"density": 0.3, "merge_func": "mean"}), ("tsv_m", {})])
def test_scaled_task_vector_is_the_methods_own_merge_at_every_lambda(method, settings):
    import torch

    from fusionbench_core.config import ComponentSpec
    from fusionbench_core.experiments.reuse import ScaledTaskVector, lambda_axis
    from fusionbench_core.run import instantiate

    host, pool = get_host(), _Pool()
    unit = instantiate(host, "method", ComponentSpec(method, {**settings, "scaling_factor": 1.0}))
    assert lambda_axis(method, unit) == "scaling_factor"
    vector = ScaledTaskVector.from_method(unit, pool)
    for lam in (0.0, 0.3, -0.5, 2.0):
        direct = instantiate(host, "method", ComponentSpec(method, {**settings, "scaling_factor": lam})).run(pool)
        reused = vector.model_at(lam)
        assert reused.keys() == direct.keys() and reused["w"].dtype == torch.float32
        assert torch.equal(reused["ids"], direct["ids"])
        for key in ("w", "b"):  # the same weights, up to one float32 rounding
            torch.testing.assert_close(reused[key], direct[key], rtol=0, atol=4e-7 * (1 + abs(lam)))
    assert not torch.equal(vector.model_at(0.3)["w"], vector.model_at(0.6)["w"])


def test_only_linear_tensorwise_methods_have_a_lambda_axis():
    from fusionbench_core.config import ComponentSpec
    from fusionbench_core.experiments.reuse import lambda_axis
    from fusionbench_core.run import instantiate

    host = get_host()
    assert lambda_axis("simple_average", instantiate(host, "method", ComponentSpec("simple_average", {}))) is None
    assert lambda_axis("dare", instantiate(host, "method", ComponentSpec("dare", {}))) is None
    ta = type(instantiate(host, "method", ComponentSpec("task_arithmetic", {})))
    assert lambda_axis("renamed_task_arithmetic", ta) is None  # the table names methods, not classes

    class Declared(ta):
        lambda_linear = "scaling_factor"

    assert lambda_axis("anything", Declared) == "scaling_factor"


def test_lambda_sweep_reuses_pools_and_task_vector_and_stores_what_separate_runs_store(spec_file, tmp_path,
                                                                                      monkeypatch):
    from fusionbench_core import tiny
    from fusionbench_core.engine import tensorwise

    merges, taskpools = [], []
    real_merge, real_init = tensorwise.merge_sources, tiny.TinyTaskPool.__init__

    def counting_merge(algorithm, *args, **kwargs):
        merges.append(algorithm.name)
        return real_merge(algorithm, *args, **kwargs)

    def counting_init(self, *args, **kwargs):
        taskpools.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(tensorwise, "merge_sources", counting_merge)
    monkeypatch.setattr(tiny.TinyTaskPool, "__init__", counting_init)
    spec = load_spec(spec_file)
    runs = {}
    for reuse in (True, False):
        merges.clear()
        taskpools.clear()
        db = tmp_path / f"reuse-{reuse}.sqlite3"
        with open_store(db) as store:
            result = run_sweep(spec, store, reuse=reuse)
        assert result.counts() == {"done": 14, "stored": 0, "left": 0}
        runs[reuse] = (sorted(merges), len(taskpools), db)
    # Reused: one merge per (method, seed) λ group, plus one per simple-average cell; separately: one per cell.
    assert runs[True][0] == sorted(["task_arithmetic"] * 2 + ["ties"] * 2 + ["simple_average"] * 2)
    assert runs[False][0] == sorted(["task_arithmetic"] * 6 + ["ties"] * 4 + ["simple_average"] * 2)
    # Task pools built: planning (1) + references (1) + one per job: 4 λ groups + 2 cells, against 12 cells.
    assert runs[True][1] == 2 + 6 and runs[False][1] == 2 + 12
    reused, separate = stored_metrics(runs[True][2]), stored_metrics(runs[False][2])
    assert reused.keys() == separate.keys() and len(reused) == 14 * 2 * 2 * 2 - 2 * 2 * 2  # pretrained: test only
    for key, value in separate.items():
        assert reused[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert stored_predictions(runs[True][2]) == stored_predictions(runs[False][2])
    with open_store(runs[True][2]) as store:
        ta = next(r for r in store.runs(method="ties"))
        assert store.report(ta["id"])["cost"]["lambda_group"]["cells"] == 2


def test_an_interrupted_lambda_group_keeps_its_finished_cells_and_resumes(spec_file, tmp_path, monkeypatch):
    from fusionbench_core.experiments import reuse

    spec = load_spec(spec_file)
    real_model_at, calls = reuse.ScaledTaskVector.model_at, []

    def interrupting(self, scale):
        calls.append(scale)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C inside the third λ of the first group
        return real_model_at(self, scale)

    monkeypatch.setattr(reuse.ScaledTaskVector, "model_at", interrupting)
    db = tmp_path / "r.sqlite3"
    with open_store(db) as store:
        first = run_sweep(spec, store)
        assert first.interrupted and first.counts()["done"] == 2 + 2  # references + two λ of the group
        assert sorted(r["hyperparameters"]["scaling_factor"] for r in store.runs()) == [0.3, 0.6]
        monkeypatch.setattr(reuse.ScaledTaskVector, "model_at", real_model_at)
        second = run_sweep(spec, store)
        assert not second.interrupted and second.counts() == {"done": 10, "stored": 4, "left": 0}
    with open_store(tmp_path / "whole.sqlite3") as store:
        run_sweep(spec, store)
    assert stored_metrics(db) == stored_metrics(tmp_path / "whole.sqlite3")


# -- executors --------------------------------------------------------------------------------------


def _ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("ray is not installed, but CI installs it (scripts/setup.sh: fusionbench_core[ray])")
        pytest.skip("ray is not installed (pip install 'fusionbench-core[ray]'; scripts/setup.sh installs it)")


def test_ray_executor_on_a_local_instance_stores_what_the_serial_executor_stores(spec_file, tmp_path):
    _ray_or_skip()
    spec = load_spec(spec_file)
    with open_store(tmp_path / "serial.sqlite3") as store:
        serial = run_sweep(spec, store)
    with open_store(tmp_path / "ray.sqlite3") as store:
        ray_result = run_sweep(spec, store, executor="ray", num_cpus=2)
        assert store.check() == "ok"
    assert serial.counts() == ray_result.counts() == {"done": 14, "stored": 0, "left": 0}
    serial_metrics, ray_metrics = stored_metrics(tmp_path / "serial.sqlite3"), stored_metrics(tmp_path / "ray.sqlite3")
    assert len(serial_metrics) == 104 and ray_metrics == serial_metrics  # identical, value for value
    assert stored_predictions(tmp_path / "ray.sqlite3") == stored_predictions(tmp_path / "serial.sqlite3")
    with open_store(tmp_path / "ray.sqlite3") as store:  # resumable through Ray too: nothing left to run
        assert run_sweep(spec, store, executor="ray", num_cpus=1).counts() == {"done": 0, "stored": 14, "left": 0}


def test_bad_executor_options_are_one_line_errors(spec_file, tmp_path, fb_cli, monkeypatch):
    db = str(tmp_path / "r.sqlite3")
    out = fb_cli("sweep", str(spec_file), "--store", db, "--executor", "threads")
    assert out.exit_code == 1 and out.stderr.strip() == "Error: unknown executor 'threads' (known: serial, ray)"
    out = fb_cli("sweep", str(spec_file), "--store", db, "--address", "ray://x:1")
    assert out.exit_code == 1 and out.stderr.strip() == ("Error: --address, --num-cpus and --gpus-per-cell need "
                                                         "--executor ray")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # Ray not installed
    out = fb_cli("sweep", str(spec_file), "--store", db, "--executor", "ray")
    assert out.exit_code == 1
    assert out.stderr.strip() == "Error: executor 'ray' needs Ray: pip install 'fusionbench-core[ray]'"
    assert not os.path.exists(db)  # refused before the store was opened


# -- fb run in the store ----------------------------------------------------------------------------


def test_fb_run_records_its_run_in_the_store_and_a_sweep_finds_it(tmp_path, fb_cli):
    db = tmp_path / "runs.sqlite3"
    out = fb_cli("run", "-m", "ties", *TINY, "-o", str(tmp_path / "run"), "--store", str(db), "--json")
    assert out.exit_code == 0, out.stderr
    assert "predictions" not in out.json and "result store: run 1 of" in out.stderr
    listed = fb_cli("results", "--store", str(db), "--json").json
    assert len(listed) == 1 and listed[0]["method"] == "ties" and listed[0]["sweep"] is None
    assert listed[0]["test_accuracy"] == pytest.approx(out.json["average"]["accuracy"])
    with open_store(db) as store:
        preds = store.predictions(listed[0]["id"], "test")
        assert set(preds) == {"task0", "task1"} and len(preds["task0"]["predicted"]) == 64
        hits = sum(p == t for p, t in zip(preds["task1"]["predicted"], preds["task1"]["target"]))
        assert hits / 64 == pytest.approx(out.json["tasks"]["task1"]["accuracy"])
    again = fb_cli("run", "-m", "ties", *TINY, "-o", str(tmp_path / "run2"), "--store", str(db), "--json")
    assert again.exit_code == 0 and "is run 1 of" in again.stderr
    assert len(fb_cli("results", "--store", str(db), "--json").json) == 1
    # The same cell in a sweep scored on the test split alone is the run fb run recorded.
    spec = tmp_path / "one.yaml"
    spec.write_text("methods: {ties: {}}\nseeds: [0]\nselect_on: test\nreference: false\n"
                    "suites: [{modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}]\n")
    swept = fb_cli("sweep", str(spec), "--store", str(db), "--json")
    assert swept.exit_code == 0 and [r["status"] for r in swept.json] == ["stored"]


def test_fb_run_no_store_leaves_the_store_alone(tmp_path, fb_cli, monkeypatch):
    db = tmp_path / "default.sqlite3"
    monkeypatch.setenv("FUSIONBENCH_STORE", str(db))
    out = fb_cli("run", *TINY, "-o", str(tmp_path / "run"), "--no-store", "--json")
    assert out.exit_code == 0, out.stderr
    assert not db.exists() and "result store" not in out.stderr
    out = fb_cli("run", *TINY, "-o", str(tmp_path / "run2"), "--json")  # the default: $FUSIONBENCH_STORE
    assert out.exit_code == 0 and db.exists()
    assert len(fb_cli("results", "--json").json) == 1
    clash = fb_cli("run", *TINY, "--no-store", "--store", str(db))
    assert clash.exit_code != 0 and "--store and --no-store" in clash.stderr


# -- keeping going past a failing cell --------------------------------------------------------------

FAILING_SPEC = """
name: tiny-failing
methods:
  slerp: {}
  simple_average: {}
seeds: [0]
suites:
  - {modelpool: {name: tiny, n_models: 3}, taskpool: {name: tiny, n_models: 3}}
"""


def test_keep_going_marks_a_failing_cell_failed_stores_the_rest_and_retries_it(tmp_path, fb_cli):
    spec, db = tmp_path / "failing.yaml", str(tmp_path / "r.sqlite3")
    spec.write_text(FAILING_SPEC)
    out = fb_cli("sweep", str(spec), "--store", db)  # without -k the first failure ends the sweep
    assert out.exit_code == 1 and out.stderr.strip().splitlines()[-1] == (
        "Error: method 'slerp' needs exactly 2 models, got 3 in model pool 'tiny'")
    with open_store(db) as store:
        assert [r["method"] for r in store.runs(kind=None)] == ["_pretrained_", "_individual_"]
    out = fb_cli("sweep", str(spec), "--store", db, "--keep-going", "--json")
    assert out.exit_code == 1
    rows = {row["method"]: row for row in __import__("json").loads(out.stdout)}
    assert rows["slerp"]["status"] == "failed" and rows["simple_average"]["status"] == "done"
    assert rows["slerp"]["error"] == "ConfigError: method 'slerp' needs exactly 2 models, got 3 in model pool 'tiny'"
    assert ("failed: slerp (t=0.5) on tiny[n_models=3] seed=0: ConfigError: method 'slerp' needs exactly 2 models, "
            "got 3 in model pool 'tiny'" in out.stderr.splitlines())
    with open_store(db) as store:
        assert sorted(r["method"] for r in store.runs()) == ["simple_average"]  # nothing stored for slerp
    again = fb_cli("sweep", str(spec), "--store", db, "-k", "--json")  # the failed cell is retried, the rest skipped
    statuses = {row["method"]: row["status"] for row in __import__("json").loads(again.stdout)}
    assert again.exit_code == 1 and statuses == {"_pretrained_": "stored", "_individual_": "stored",
                                                 "slerp": "failed", "simple_average": "stored"}


def test_a_ray_task_asks_for_the_cpus_it_computes_with_at_most_a_nodes():
    from fusionbench_core.experiments.executors import task_cpus

    assert task_cpus(2, 2.0) == 2 and task_cpus(2, 16.0) == 2  # one 2-thread task per 2 cores
    assert task_cpus(8, 4.0) == 4  # never more than a node has: the task must stay schedulable
    assert task_cpus(None, 4.0) == 1 and task_cpus(0, 4.0) == 1


def test_keep_going_through_ray_fails_the_same_cell_and_stores_the_rest(tmp_path):
    _ray_or_skip()
    spec_path = tmp_path / "failing.yaml"
    spec_path.write_text(FAILING_SPEC)
    with open_store(tmp_path / "r.sqlite3") as store:
        result = run_sweep(load_spec(spec_path), store, executor="ray", num_cpus=1, keep_going=True)
        assert result.counts() == {"done": 3, "stored": 0, "left": 0, "failed": 1}
        (failed,) = [row for row in result.rows if row["status"] == "failed"]
        assert failed["method"] == "slerp" and failed["error"].startswith("ConfigError: method 'slerp' needs exactly 2")
        assert sorted(r["method"] for r in store.runs()) == ["simple_average"]
