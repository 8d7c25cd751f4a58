"""Every method through ``fb run -p tiny --json``: exit status, report shape and cost fields."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUNS = {
    "simple_ensemble": ([], {"members": 3}),
    "weighted_ensemble": (["-s", "weights=[1,2,3]"], {"members": 3}),
    "fisher_merging": (["-s", "examples=32"], {"examples": 96, "forward_passes": 96, "backward_passes": 96}),
    "regmean": (["-s", "examples=64"], {"examples": 192, "forward_passes": 192, "backward_passes": 0}),
    "regmean_plusplus": (["-s", "examples=64"], {"examples": 192, "backward_passes": 0}),
    "mats": (["-s", "examples=64"], {"examples": 192, "forward_passes": 192, "backward_passes": 0}),
    "task_wise_adamerging": (["-s", "steps=5", "-s", "device=cpu"],
                             {"forward_passes": 240, "backward_passes": 240, "examples": 192}),
    "layer_wise_adamerging": (["-s", "steps=5", "-s", "device=cpu"],
                              {"forward_passes": 240, "backward_passes": 240, "coefficients": 18}),
}
POST_HEAD = ["majority_vote_ensemble", "max_model_predictor"]


@pytest.mark.parametrize("method", sorted(RUNS))
def test_fb_run_on_the_tiny_pool(method, fb_cli, tmp_path):
    args, expected = RUNS[method]
    result = fb_cli("run", "-m", method, "-p", "tiny", "--json", *args, "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert report["method"] == method
    assert set(report["tasks"]) == {"task0", "task1", "task2"}
    assert 0.0 < report["average"]["accuracy"] <= 1.0
    cost = report["cost"]
    for field in ("wall_s", "peak_rss_mb", "examples", "forward_passes", "backward_passes"):
        assert field in cost, field
    for field, value in expected.items():
        assert cost[field] == value, field
    assert (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("method", POST_HEAD)
def test_post_head_ensembles_on_the_tiny_pool(method, fb_cli, tmp_path, predictor_taskpool):
    result = fb_cli("run", "-m", method, "-p", "tiny", "-t", predictor_taskpool, "--json", "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.stderr
    assert {"wall_s", "peak_rss_mb", "examples", "forward_passes", "backward_passes"} <= set(result.json["cost"])


def test_a_sweep_over_alpha_reuses_the_grams(fb_cli, tmp_path):
    costs = []
    for alpha in ("0.95", "0.5"):
        result = fb_cli("run", "-m", "regmean", "-p", "tiny", "--json", "-s", f"alpha={alpha}",
                        "-o", str(tmp_path / alpha))
        assert result.exit_code == 0, result.stderr
        costs.append(result.json["cost"])
    assert costs[0]["forward_passes"] == 768 and costs[0]["statistics_cache_hits"] == 0
    assert costs[1]["forward_passes"] == 0 and costs[1]["statistics_cache_hits"] == 3


def test_methods_listing_names_every_method_without_importing_torch():
    code = ("import sys, json; from fusionbench_core.plugins import get_host; h = get_host(); "
            "rows = {e.name: e.metadata.get('requirement') for e in h.registry('method').entries()}; "
            "print(json.dumps([rows, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    rows, torch_loaded = json.loads(out)
    assert not torch_loaded
    expected = {"simple_ensemble": "data-free", "weighted_ensemble": "data-free", "max_model_predictor": "data-free",
                "majority_vote_ensemble": "data-free", "fisher_merging": "train-statistics",
                "regmean": "train-statistics", "regmean_plusplus": "train-statistics", "mats": "train-statistics",
                "task_wise_adamerging": "test-time", "layer_wise_adamerging": "test-time"}
    assert {name: rows.get(name) for name in expected} == expected
