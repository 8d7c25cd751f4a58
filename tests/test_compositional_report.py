"""The numbers of ``fb compositional report`` on a tiny hand-made fixture (no torch, no store).

Grid: held-in pairs ``a-x``, ``b-y``, ``c-x``; held-out ``a-y``, ``b-x``, ``c-y``. Every expected
value below is computed by hand from the fixture's accuracies.
"""

from __future__ import annotations

import math

import pytest

from fusionbench_vision.compositional import analysis as an

HELD_IN = ["a-x", "b-y", "c-x"]
HELD_OUT = ["a-y", "b-x", "c-y"]
ORDER = {0: HELD_IN, 1: ["c-x", "a-x", "b-y"]}


def run(run_id, method, hps, seed, *, kind="fused", cost=None, **pool):
    return {"id": run_id, "method": method, "hyperparameters": hps, "kind": kind, "sweep": "s",
            "modelpool": {"name": "mini-compositional", "seed": seed, **pool}, "cost": cost or {}}


def scores(test_in, test_out, val_in=None):
    """Per-pair accuracies: every held-in pair ``test_in``, every held-out pair ``test_out``."""
    out = {"test": {**{t: {"accuracy": test_in} for t in HELD_IN}, **{t: {"accuracy": test_out} for t in HELD_OUT}}}
    if val_in is not None:
        out["validation"] = {t: {"accuracy": val_in} for t in HELD_IN}
    return out


def fixture():
    rows = [
        (run(1, "_pretrained_", {}, 0, kind="pretrained"), scores(0.2, 0.2)),
        (run(2, "_individual_", {}, 0, kind="individual"), {"test": {t: {"accuracy": 0.9} for t in HELD_IN}}),
        (run(3, "simple_average", {}, 0, models="multitask"), scores(0.8, 0.5, 0.8)),
        # task arithmetic: λ=0.3 wins on held-in validation (0.7 > 0.5); its test numbers, seeds 0 and 1.
        (run(4, "task_arithmetic", {"scaling_factor": 0.1}, 0, cost={"fuse_s": 1.0}), scores(0.9, 0.9, 0.5)),
        (run(5, "task_arithmetic", {"scaling_factor": 0.3}, 0, cost={"fuse_s": 2.0}), scores(0.6, 0.4, 0.7)),
        (run(6, "task_arithmetic", {"scaling_factor": 0.3}, 1, cost={"fuse_s": 4.0}), scores(0.4, 0.2, 0.7)),
        (run(7, "simple_average", {}, 0, cost={"fuse_s": 0.5, "forward_passes": 10}), scores(0.3, 0.35, 0.3)),
        (run(8, "ties", {"scaling_factor": 0.5}, 0), scores(0.7, 0.25, 0.6)),
        # scaling: 2 of 3 experts in permutation 1 (c-x, a-x) -> held-in = those two pairs only.
        (run(9, "simple_average", {}, 0, n_models=2, permutation=1),
         {"test": {"c-x": {"accuracy": 0.6}, "a-x": {"accuracy": 0.4}, "b-y": {"accuracy": 0.0},
                   **{t: {"accuracy": 0.1} for t in HELD_OUT}}}),
    ]
    return [an.record(r, m, HELD_IN, lambda p: ORDER[p]) for r, m in rows]


def by_method(rows):
    return {r["method"]: r for r in rows}


def test_records_know_which_pairs_were_merged():
    recs = {r["id"]: r for r in fixture()}
    assert recs[9]["merged"] == ["a-x", "c-x"] and not recs[9]["full"] and recs[9]["n_models"] == 2
    assert recs[5]["merged"] == HELD_IN and recs[5]["full"]
    assert recs[3]["method"] == "multitask" and recs[3]["baseline"]
    assert recs[1]["method"] == "pretrained" and recs[2]["method"] == "individual"


def test_method_table_selects_on_held_in_validation_and_reports_test_mean_and_std():
    rows = by_method(an.method_table(fixture(), HELD_OUT))
    ta = rows["task_arithmetic"]
    assert ta["hyperparameters"] == {"scaling_factor": 0.3} and ta["seeds"] == 2
    assert ta["validation_held_in"] == pytest.approx(0.7)
    assert ta[an.HELD_IN] == pytest.approx((0.5, math.sqrt(0.02)))
    assert ta[an.HELD_OUT] == pytest.approx((0.3, math.sqrt(0.02)))
    assert rows["individual"][an.HELD_IN] == pytest.approx((0.9, 0.0)) and rows["individual"][an.HELD_OUT] is None
    assert rows["simple_average"][an.HELD_IN] == pytest.approx((0.3, 0.0)), "the subset run is not a full-set run"
    assert rows["multitask"][an.HELD_OUT] == pytest.approx((0.5, 0.0))


def test_correlation_over_methods_by_hand():
    corr = an.correlation(an.method_table(fixture(), HELD_OUT))
    # Points (held-in, held-out): task_arithmetic (0.5, 0.3), simple_average (0.3, 0.35), ties (0.7, 0.25).
    xs, ys = [0.5, 0.3, 0.7], [0.3, 0.35, 0.25]
    mx, my = sum(xs) / 3, sum(ys) / 3
    r = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(
        sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert corr["methods"] == 3
    assert corr["pearson"] == pytest.approx(r) and corr["pearson"] == pytest.approx(-1.0)
    assert corr["spearman"] == pytest.approx(-1.0)


def test_spearman_averages_ties_and_needs_three_points():
    assert an.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(an.pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))
    assert an.pearson([1, 2], [2, 1]) is None


def test_scaling_table_uses_the_merged_pairs_as_held_in():
    table = an.scaling_table(fixture(), HELD_OUT, {"simple_average": {}, "task_arithmetic": {"scaling_factor": 0.3}})
    assert table["simple_average"][2][an.HELD_IN] == pytest.approx((0.5, 0.0))  # mean of c-x 0.6 and a-x 0.4
    assert table["simple_average"][2][an.HELD_OUT] == pytest.approx((0.1, 0.0))
    assert table["simple_average"][3][an.HELD_IN] == pytest.approx((0.3, 0.0))
    assert table["task_arithmetic"][3]["runs"] == 2 and 2 not in table["task_arithmetic"]


def test_sensitivity_curve_and_cost_table():
    curve = an.sensitivity_table(fixture(), HELD_OUT, {"task_arithmetic": "scaling_factor", "ties": "scaling_factor"})
    assert "ties" not in curve, "one point is no curve"
    (v1, i1, o1, val1), (v3, i3, o3, val3) = curve["task_arithmetic"]["points"]
    assert (v1, i1, o1, val1) == pytest.approx((0.1, 0.9, 0.9, 0.5))
    assert (v3, i3, o3, val3) == pytest.approx((0.3, 0.5, 0.3, 0.7))
    cost = by_method(an.cost_table(fixture()))
    assert cost["task_arithmetic"]["runs"] == 3
    assert cost["task_arithmetic"]["fuse_s"] == pytest.approx((7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                                  + (4 - 7 / 3) ** 2) / 2)))
    assert cost["simple_average"]["forward_passes"] == (10.0, 0.0) and cost["ties"]["fuse_s"] is None
    assert "multitask" not in cost and "pretrained" not in cost


def test_markdown_report_shows_every_section():
    from fusionbench_vision.compositional import report

    records = fixture()
    rows = an.method_table(records, HELD_OUT)
    text = report.markdown({"runs": len(records), "methods": rows, "correlation": an.correlation(rows),
                            "scaling": an.scaling_table(records, HELD_OUT, {"simple_average": {}}),
                            "sensitivity": an.sensitivity_table(records, HELD_OUT, {"task_arithmetic": "scaling_factor"}),
                            "cost": an.cost_table(records)})
    assert "| task_arithmetic | scaling_factor=0.3 | 2 | 50.0 ± 14.1 | 30.0 ± 14.1 |" in text
    assert "Pearson r = -1.00, Spearman ρ = -1.00" in text
    assert "| simple_average | 50.0 / 10.0 | 30.0 / 35.0 |" in text
    assert "scaling_factor=0.1: 90.0 / 90.0 (50.0)" in text
