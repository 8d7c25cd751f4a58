"""Validation selection and the leaderboard formats, on a hand-made store (no torch needed)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fusionbench_core.errors import FusionBenchError
from fusionbench_core.experiments.store import open_store
from fusionbench_core.experiments.tables import build_leaderboards, render


def report(method, lam, seed, test, val, wall=1.0):
    """A two-task run report with test and validation accuracies per task."""
    def split(values):
        tasks = {"a": {"accuracy": values[0]}, "b": {"accuracy": values[1]}}
        return {"tasks": tasks, "average": {"accuracy": sum(values) / 2}}

    hps = {"scaling_factor": lam} if lam is not None else {}
    return {"method": method, "hyperparameters": hps, "modelpool": {"name": "toy"}, "taskpool": {"name": "toy"},
            "tasks": split(test)["tasks"], "average": split(test)["average"], "cost": {"wall_s": wall},
            "seed": seed, "versions": {}, "split": "test",
            "splits": {"test": split(test), "validation": split(val)}}


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "r.sqlite3") as s:
        # λ = 0.3: best on validation (0.80), worse on test; λ = 0.7: best on test, worse on validation.
        s.add("k1", report("ta", 0.3, 0, test=(0.60, 0.70), val=(0.80, 0.80), wall=1.0))
        s.add("k2", report("ta", 0.3, 1, test=(0.64, 0.66), val=(0.80, 0.80), wall=3.0))
        s.add("k3", report("ta", 0.7, 0, test=(0.90, 0.90), val=(0.50, 0.50)))
        s.add("k4", report("ta", 0.7, 1, test=(0.90, 0.90), val=(0.50, 0.50)))
        s.add("k5", report("avg", None, 0, test=(0.50, 0.50), val=(0.60, 0.60)))
        individual = report("_individual_", None, 0, test=(0.80, 1.00), val=(0.0, 0.0))
        del individual["splits"]["validation"]
        s.add("ref", individual, kind="individual")
        yield s


def test_validation_selection_reports_the_test_split_of_the_setting_best_on_validation(store):
    (board,) = build_leaderboards(store)
    rows = {r.method: r for r in board.rows}
    ta = rows["ta"]
    assert ta.hyperparameters == {"scaling_factor": 0.3}  # not 0.7, which is best on test
    assert ta.selection_score == pytest.approx(0.80)
    assert ta.tasks["a"] == pytest.approx((0.62, 0.0282842712))  # mean, sample std of (0.60, 0.64)
    assert ta.average == pytest.approx((0.65, 0.0))  # both seeds average 0.65
    # normalised: seed 0 (0.60/0.80 + 0.70/1.00)/2 = 0.725, seed 1 (0.64/0.80 + 0.66/1.00)/2 = 0.73
    assert ta.normalised == pytest.approx((0.7275, 0.0035355339))
    assert ta.wall_s == pytest.approx(2.0) and ta.seeds == [0, 1]
    assert [r.method for r in board.rows] == ["ta", "avg", "_individual_"]
    assert "selected on the validation split" in board.caption


def test_per_seed_references_normalise_each_run_by_its_own_seed(store):
    """A suite whose experts are trained per seed records references per seed (see fb sweep)."""
    individual = report("_individual_", None, 1, test=(0.40, 0.50), val=(0.0, 0.0))
    del individual["splits"]["validation"]
    store.add("ref1", individual, kind="individual")
    (board,) = build_leaderboards(store)
    rows = {r.method: r for r in board.rows}
    # seed 0 by seed 0's reference: (0.60/0.80 + 0.70/1.00)/2 = 0.725; seed 1 by seed 1's: (0.64/0.40 + 0.66/0.50)/2 = 1.46
    assert rows["ta"].normalised == pytest.approx((1.0925, 0.5197234842))
    # avg has seed 0 only: its own reference, 0.5/0.8 and 0.5/1.0
    assert rows["avg"].normalised == pytest.approx((0.5625, 0.0))
    ref = rows["_individual_"]  # both seeds' references, averaged: ((0.8+1.0)/2, (0.4+0.5)/2)
    assert ref.seeds == [0, 1] and ref.average == pytest.approx((0.675, 0.3181980515))


def test_test_selection_is_labelled_an_oracle(store):
    (board,) = build_leaderboards(store, select_on="test")
    ta = next(r for r in board.rows if r.method == "ta")
    assert ta.hyperparameters == {"scaling_factor": 0.7} and ta.average == pytest.approx((0.9, 0.0))
    assert "oracle" in board.caption


def test_no_validation_scores_leaves_the_method_out_and_the_caption_says_so(tmp_path):
    """docs/experiments.md: a method with only test-scored runs is named in the caption, not an error (#24)."""
    with open_store(tmp_path / "r.sqlite3") as s:
        r = report("ta", 0.3, 0, test=(0.5, 0.5), val=(0.5, 0.5))
        del r["splits"]
        s.add("k", r)
        (board,) = build_leaderboards(s)
        assert board.rows == [] and board.unselectable == ["ta"]
        assert "Not shown, no validation scores" in board.caption and board.caption.endswith(": ta.")
        assert build_leaderboards(s, select_on="test")[0].rows[0].average == pytest.approx((0.5, 0.0))


def test_runs_without_the_selection_split_are_left_out_of_selection(tmp_path):
    """An `fb run` (test split only) beside a validation sweep: it neither breaks the table nor is selected."""
    with open_store(tmp_path / "r.sqlite3") as s:
        s.add("a", report("ta", 0.3, 0, test=(0.5, 0.5), val=(0.6, 0.6)))
        s.add("b", report("ta", 0.7, 0, test=(0.5, 0.5), val=(0.4, 0.4)))
        lone = report("ta", 0.9, 0, test=(0.99, 0.99), val=(0.99, 0.99))
        del lone["splits"]
        s.add("c", lone)
        other = report("avg", None, 0, test=(0.7, 0.7), val=(0.7, 0.7))
        del other["splits"]
        s.add("d", other)
        (board,) = build_leaderboards(s)
        assert [r.method for r in board.rows] == ["ta"] and board.rows[0].hyperparameters == {"scaling_factor": 0.3}
        assert board.unselectable == ["avg"] and "Not shown, no validation scores" in board.caption
        assert {r.method for r in build_leaderboards(s, select_on="test")[0].rows} == {"ta", "avg"}


def test_formats(store):
    boards = build_leaderboards(store)
    md = render(boards, "markdown")  # 72.75 % normalised prints as 72.7 (binary float just below)
    assert "| ta | 62.0 ± 2.8 | 68.0 ± 2.8 | 65.0 ± 0.0 | 72.7 ± 0.4 | 2 | 2.00 | scaling_factor=0.3 |" in md
    assert "| avg | 50.0 | 50.0 | 50.0 | 56.2 | 1 | 1.00 | – |" in md  # one seed: no ± (#24)
    assert "hyperparameters selected on the validation split" in md
    rows = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert rows[0]["method"] == "ta" and float(rows[0]["a_mean"]) == pytest.approx(0.62)
    assert json.loads(rows[0]["hyperparameters"]) == {"scaling_factor": 0.3}
    tex = render(boards, "latex")
    assert r"\begin{tabular}" in tex and r"62.0$\pm$2.8" in tex and r"scaling\_factor=0.3" in tex
    html = render(boards, "html")
    assert html.count('<tr data-method="') == 3 and "<td>62.0 ± 2.8</td>" in html
    with pytest.raises(FusionBenchError, match="table format"):
        render(boards, "docx")


def test_table_and_results_cli(store, fb_cli):
    path = str(store.path)
    out = fb_cli("table", "--store", path, "--json")
    assert out.exit_code == 0, out.stderr
    assert [r["method"] for r in out.json] == ["ta", "avg", "_individual_"]
    assert out.json[0]["hyperparameters"] == {"scaling_factor": 0.3}
    listed = fb_cli("results", "--store", path, "--method", "ta", "--json")
    assert listed.exit_code == 0 and len(listed.json) == 4
    assert all(r["method"] == "ta" for r in listed.json)
    shown = fb_cli("results", "show", "k3", "--store", path, "--json")
    assert shown.exit_code == 1 and "cell-key prefix of 6+" in shown.stderr
    shown = fb_cli("results", "show", str(listed.json[2]["id"]), "--store", path, "--json")
    assert shown.json["hyperparameters"] == {"scaling_factor": 0.7}
    assert shown.json["metrics"]["validation"]["a"]["accuracy"] == 0.5
    missing = fb_cli("table", "--store", path, "--suite", "nope")
    assert missing.exit_code == 1 and "holds no runs of suite 'nope'" in missing.stderr
