"""The paired bootstrap of `fb compare`, against hand-computed cases (no torch)."""

from __future__ import annotations

import pytest

from fusionbench_core.errors import FusionBenchError
from fusionbench_core.experiments.stats import paired_bootstrap, paired_differences


def test_differences_pair_examples_by_position():
    a = {"t": {"predicted": [1, 0, 2, 2], "target": [1, 1, 2, 0]}}
    b = {"t": {"predicted": [1, 1, 0, 0], "target": [1, 1, 2, 0]}}
    # A right on 0, 2; B right on 0, 1, 3 → d = [0, -1, 1, -1]
    assert paired_differences(a, b) == {"t": [0, -1, 1, -1]}
    with pytest.raises(FusionBenchError, match="different examples of task 't'"):
        paired_differences(a, {"t": {"predicted": [1, 1, 0, 0], "target": [0, 0, 0, 0]}})


def test_two_examples_hand_computed():
    # d = [1, 0]: resampled means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
    result = paired_bootstrap({"t": [1, 0]}, resamples=4000, seed=3)
    assert result["difference"] == 0.5
    assert (result["lower"], result["upper"]) == (0.0, 1.0)  # the 2.5 % and 97.5 % quantiles
    # P(stat <= 0) = 1/4, P(stat >= 0) = 1  →  p = 2 · 1/4 = 1/2
    assert result["p_value"] == pytest.approx(0.5, abs=0.04)


def test_three_examples_hand_computed_distribution():
    # d = [1, 1, 0]: k ~ Binomial(3, 2/3) ones, mean k/3; P(k=0) = 1/27, P(k=3) = 8/27.
    result = paired_bootstrap({"t": [1, 1, 0]}, resamples=20000, seed=0, level=0.90)
    assert result["difference"] == pytest.approx(2 / 3)
    # 5 % quantile: P(mean ≤ 1/3) = 7/27 ≈ 0.26 > 0.05 ≥ P(0) = 1/27 → 1/3; 95 %: P(≤ 2/3) = 19/27 < 0.95 → 1
    assert result["lower"] == pytest.approx(1 / 3) and result["upper"] == 1.0
    assert result["p_value"] == pytest.approx(2 / 27, abs=0.01)  # P(mean ≤ 0) = 1/27


def test_average_over_tasks_and_degenerate_interval():
    # Task x: A always right, B always wrong (+1); task y: identical (0). Every resample gives 0.5.
    result = paired_bootstrap({"x": [1, 1, 1], "y": [0, 0, 0, 0, 0]}, resamples=200, seed=1)
    assert (result["difference"], result["lower"], result["upper"]) == (0.5, 0.5, 0.5)
    assert result["p_value"] == 0.0 and result["examples"] == {"x": 3, "y": 5}


def test_same_seed_same_interval_and_checked_arguments():
    d = {"t": [1, 0, -1, 1, 0, 1, 1, -1, 0, 1]}
    assert paired_bootstrap(d, seed=5) == paired_bootstrap(d, seed=5)
    with pytest.raises(FusionBenchError, match="level"):
        paired_bootstrap(d, level=1.0)
    with pytest.raises(FusionBenchError, match="no examples"):
        paired_bootstrap({"t": []})
