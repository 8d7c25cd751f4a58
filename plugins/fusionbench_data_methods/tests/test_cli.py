"""Every method through ``fb run -p tiny --json``: exit status, report shape and cost fields."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusionbench_core.plugins import get_host

DISTRIBUTION = "fusionbench-data-methods"
METHODS = sorted(entry.name for entry in get_host().registry("method").entries()
                 if entry.distribution == DISTRIBUTION)
"""Every method this distribution registers: a new one runs here without editing this file."""

POST_HEAD = {"majority_vote_ensemble", "max_model_predictor"}
"""Rules that act after the task head; scored with a task pool that scores predictors."""

SMALL = 32
"""Examples per task passed to the statistics methods, to keep the runs short."""

ARGS = {
    "weighted_ensemble": ["-s", "weights=[1,2,3]"],
    "fisher_merging": ["-s", f"examples={SMALL}"],
    "regmean": ["-s", f"examples={SMALL}"],
    "regmean_plusplus": ["-s", f"examples={SMALL}"],
    "mats": ["-s", f"examples={SMALL}"],
    "task_wise_adamerging": ["-s", "steps=5", "-s", "device=cpu"],
    "layer_wise_adamerging": ["-s", "steps=5", "-s", "device=cpu"],
}


def default(method: str, option: str):
    """The declared default of ``method``'s hyperparameter ``option``."""
    cls = get_host().registry("method").entry(method).load()
    return next(hp.default for hp in cls.hyperparameters if hp.name == option)


def expected_cost(method: str) -> dict:
    """The cost counters ``method`` must report on the tiny pool with :data:`ARGS`, derived from the
    pool's sizes and the method's declared defaults."""
    from fusionbench_core.tiny import TinyModelPool

    pool = TinyModelPool()
    tasks = len(pool.model_names)
    test_size = len(pool.suite.tasks["task0"].x_test)
    if method in ("simple_ensemble", "weighted_ensemble"):
        return {"members": tasks}
    if method == "fisher_merging":  # one forward and one backward pass per example
        return {"examples": SMALL * tasks, "forward_passes": SMALL * tasks, "backward_passes": SMALL * tasks}
    if method in ("regmean", "mats"):  # one forward pass per example, no gradients
        return {"examples": SMALL * tasks, "forward_passes": SMALL * tasks, "backward_passes": 0}
    if method == "regmean_plusplus":
        return {"examples": SMALL * tasks, "backward_passes": 0}
    if method.endswith("adamerging"):  # every step: one batch per task, forward and backward
        passes = 5 * default(method, "batch_size") * tasks
        cost = {"forward_passes": passes, "backward_passes": passes,
                "examples": tasks * min(test_size, 5 * default(method, "batch_size"))}
        if method == "layer_wise_adamerging":  # one λ per task and parameter tensor
            cost["coefficients"] = tasks * len(pool.tensors("task0").keys())
        return cost
    return {}


@pytest.mark.parametrize("method", sorted(set(METHODS) - POST_HEAD))
def test_fb_run_on_the_tiny_pool(method, fb_cli, tmp_path, tiny_modelpool, tiny_taskpool):
    result = fb_cli("run", "-m", method, "-p", "tiny", "--json", *ARGS.get(method, []), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert report["method"] == method
    assert set(report["tasks"]) == {"task0", "task1", "task2"}
    settings = dict(arg.split("=", 1) for arg in ARGS.get(method, [])[1::2])
    algorithm = get_host().registry("method").entry(method).load()(**settings)
    in_memory = tiny_taskpool().evaluate(algorithm.run(tiny_modelpool()))  # the same merge, in process
    assert report["average"]["accuracy"] == pytest.approx(in_memory.average["accuracy"], abs=1e-9)
    cost = report["cost"]
    for field in ("wall_s", "peak_rss_mb", "examples", "forward_passes", "backward_passes"):
        assert field in cost, field
    assert 0 < cost["wall_s"] < 600 and cost["peak_rss_mb"] > 0
    for field, value in expected_cost(method).items():
        assert cost[field] == value, field
    assert json.loads((tmp_path / "run" / "report.json").read_text())["average"] == report["average"]


@pytest.mark.parametrize("method", sorted(POST_HEAD))
def test_post_head_ensembles_on_the_tiny_pool(method, fb_cli, tmp_path, predictor_taskpool):
    result = fb_cli("run", "-m", method, "-p", "tiny", "-t", predictor_taskpool, "--json", "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.stderr
    assert result.json["cost"]["members"] == len(result.json["tasks"]) == 3


def test_a_sweep_over_alpha_reuses_the_grams(fb_cli, tmp_path):
    costs = []
    for alpha in ("0.95", "0.5"):
        result = fb_cli("run", "-m", "regmean", "-p", "tiny", "--json", "-s", f"alpha={alpha}",
                        "-o", str(tmp_path / alpha))
        assert result.exit_code == 0, result.stderr
        costs.append(result.json["cost"])
    tasks = 3
    assert costs[0]["forward_passes"] == default("regmean", "examples") * tasks  # 256 · 3 = 768 today
    assert costs[0]["statistics_cache_hits"] == 0
    assert costs[1]["forward_passes"] == 0 and costs[1]["statistics_cache_hits"] == tasks


@pytest.mark.parametrize(("method", "option", "value", "range_text"), [
    ("regmean", "alpha", "1.5", "[0, 1]"), ("regmean_plusplus", "alpha", "-0.1", "[0, 1]"),
    ("mats", "iterations", "-1", ">= 0"), ("fisher_merging", "examples", "0", ">= 1"),
    ("task_wise_adamerging", "init_lambda", "2", "[0, 1]"), ("layer_wise_adamerging", "lr", "0", "> 0"),
    ("regmean", "batch_size", "0", ">= 1"),
])
def test_dry_run_rejects_out_of_range_values_in_one_line(fb_cli, method, option, value, range_text):
    result = fb_cli("run", "-p", "tiny", "-m", method, "-s", f"{option}={value}", "--dry-run")
    assert result.exit_code != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{method}.{option}" in lines[0] and value in lines[0] and range_text in lines[0], lines[0]


@pytest.mark.parametrize("method", METHODS)
def test_every_numeric_hyperparameter_declares_its_range(method):
    cls = get_host().registry("method").entry(method).load()
    unbounded = {"init_scaling_factor"}  # λ of MaTS' task-arithmetic start: any real number
    for hp in cls.hyperparameters:
        if hp.type in (int, float) and hp.name not in unbounded:
            assert hp.range_text() is not None, f"{method}.{hp.name}"


def test_methods_listing_names_every_method_without_importing_torch():
    code = ("import sys, json; from fusionbench_core.plugins import get_host; h = get_host(); "
            "rows = {e.name: e.metadata.get('requirement') for e in h.registry('method').entries()}; "
            "print(json.dumps([rows, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rows, torch_loaded = json.loads(out)
    assert not torch_loaded
    expected = {"simple_ensemble": "data-free", "weighted_ensemble": "data-free", "max_model_predictor": "data-free",
                "majority_vote_ensemble": "data-free", "fisher_merging": "train-statistics",
                "regmean": "train-statistics", "regmean_plusplus": "train-statistics", "mats": "train-statistics",
                "task_wise_adamerging": "test-time", "layer_wise_adamerging": "test-time"}
    assert {name: rows.get(name) for name in expected} == expected
