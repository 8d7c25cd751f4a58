"""Agreement with a published leaderboard: rank correlations, bootstrap, gap shares, the shipped data (no torch)."""

from __future__ import annotations

import math
import random

import pytest

from fusionbench_core.errors import FusionBenchError, UnknownComponentError
from fusionbench_core.experiments.agreement import (
    STATUSES,
    agreement,
    bootstrap_correlations,
    compare,
    gap_share,
    kendall_tau_b,
    leaderboard_summaries,
    published_leaderboard,
    published_leaderboards,
    published_scores,
    scores_from_json,
)
from fusionbench_core.experiments.stats import spearman

# -- Kendall's τ-b and Spearman's ρ, by hand ---------------------------------------------------


def test_kendall_without_ties_hand_computed():
    # pairs of (1,2,3,4) vs (1,3,2,4): only (2,3) is discordant → (5 − 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_kendall_with_ties_hand_computed():
    # x = (1,2,2,3), y = (1,2,3,3): C = 4, D = 0, one pair tied in x, one in y → 4 / sqrt(5 · 5)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # a pair tied on both sides counts in both tie terms: 2 / sqrt((3 − 1)(3 − 1))
    assert kendall_tau_b([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)


def test_correlations_undefined_for_a_constant_side():
    assert kendall_tau_b([1, 2, 3], [4, 4, 4]) is None
    assert spearman([1, 2, 3], [4, 4, 4]) is None
    assert kendall_tau_b([1], [2]) is None


def test_spearman_with_ties_hand_computed():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # ranks (1, 2.5, 2.5, 4) and (1, 2, 3.5, 3.5): Sxy = 3.75, Sxx = Syy = 4.5
    assert spearman([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)


def test_correlations_match_scipy_on_random_data_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(3, 18)
        x = [rng.randint(0, 5) for _ in range(n)]  # small range: many ties
        y = [rng.choice([rng.randint(0, 5), x[i]]) for i in range(n)]
        ours_tau, ours_rho = kendall_tau_b(x, y), spearman(x, y)
        if len(set(x)) < 2 or len(set(y)) < 2:
            assert ours_tau is None and ours_rho is None
            continue
        assert ours_tau == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)
        assert ours_rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


# -- the bootstrap over methods ----------------------------------------------------------------


def test_bootstrap_is_seeded_and_its_interval_contains_the_estimate():
    x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    y = [2, 1, 4, 3, 6, 5, 8, 7, 10, 9]
    first = bootstrap_correlations(x, y, resamples=500, seed=11)
    assert first == bootstrap_correlations(x, y, resamples=500, seed=11)
    assert first != bootstrap_correlations(x, y, resamples=500, seed=12)
    for name in ("spearman", "kendall"):
        stat = first[name]
        assert stat["lower"] <= stat["estimate"] <= stat["upper"]
        assert -1 <= stat["lower"] < stat["upper"] <= 1
    assert first["spearman"]["estimate"] == pytest.approx(spearman(x, y))
    assert first["kendall"]["estimate"] == pytest.approx(kendall_tau_b(x, y))


def test_bootstrap_interval_against_an_independent_resampling():
    """The same draws (random.Random(seed).choices) through scipy give the same percentile interval."""
    stats = pytest.importorskip("scipy.stats")
    x = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0]
    y = [2.0, 1.0, 5.0, 2.0, 4.0, 8.0, 3.0, 9.0]
    resamples, seed = 400, 5
    got = bootstrap_correlations(x, y, resamples=resamples, seed=seed, level=0.9)
    rng = random.Random(seed)
    rhos, taus, few = [], [], 0
    for _ in range(resamples):
        idx = rng.choices(range(len(x)), k=len(x))
        if len(set(idx)) < 3:
            few += 1
            continue
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            rhos.append(stats.spearmanr(xs, ys).statistic)
            taus.append(stats.kendalltau(xs, ys).statistic)
    assert got["skipped_few_distinct"] == few
    for name, values in (("spearman", rhos), ("kendall", taus)):
        values.sort()
        count = len(values)
        assert got[name]["resamples_used"] == count
        assert got[name]["lower"] == pytest.approx(values[math.floor(count * 0.05)])
        assert got[name]["upper"] == pytest.approx(values[math.ceil(count * 0.95) - 1])


def test_bootstrap_skips_few_distinct_and_constant_resamples():
    # three methods: a resample has all three distinct with probability 3!/3^3 = 2/9
    result = bootstrap_correlations([1, 2, 3], [1, 3, 2], resamples=3000, seed=0)
    used = result["kendall"]["resamples_used"]
    assert used + result["skipped_few_distinct"] == 3000
    assert used == pytest.approx(3000 * 2 / 9, rel=0.1)
    # y ties methods 0..2: a resample of those three alone has a constant y and is skipped for both statistics
    result = bootstrap_correlations([1, 2, 3, 4], [0, 0, 0, 1], resamples=2000, seed=1)
    assert result["skipped_few_distinct"] + result["spearman"]["resamples_used"] < 2000
    assert result["spearman"]["resamples_used"] == result["kendall"]["resamples_used"]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(FusionBenchError, match="resamples"):
        bootstrap_correlations([1, 2, 3], [1, 2, 3], resamples=0)
    with pytest.raises(FusionBenchError, match="level"):
        bootstrap_correlations([1, 2, 3], [1, 2, 3], level=1.0)


# -- gap shares and subsets --------------------------------------------------------------------


def test_gap_share_hand_computed():
    assert gap_share(38.6, 36.1, 64.6) == pytest.approx(2.5 / 28.5)
    assert gap_share(68.0, 48.2, 90.3) == pytest.approx(19.8 / 42.1)
    assert gap_share(14.6, 36.1, 64.6) == pytest.approx(-21.5 / 28.5)  # below the pretrained model
    assert gap_share(50.0, None, 60.0) is None
    assert gap_share(50.0, 40.0, 40.0) is None


def test_agreement_restricts_to_shared_methods_and_subsets():
    ours = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "only_ours": 9.0}
    theirs = {"a": 10.0, "b": 30.0, "c": 20.0, "d": 40.0, "only_theirs": 0.0}
    full = agreement(ours, theirs, resamples=200)
    assert full["methods"] == ["a", "b", "c", "d"] and full["n"] == 4
    assert full["spearman"]["estimate"] == pytest.approx(0.8)
    sub = agreement(ours, theirs, methods=["a", "b", "d"], resamples=200)
    assert sub["methods"] == ["a", "b", "d"] and sub["kendall"]["estimate"] == pytest.approx(1.0)
    few = agreement(ours, theirs, methods=["a", "b"], resamples=200)
    assert few["n"] == 2 and few["spearman"]["estimate"] is None and "at least 3" in few["reason"]


# -- comparing with a shipped leaderboard ------------------------------------------------------


def test_compare_with_the_published_b32_table():
    ours = {"task_arithmetic": 38.6, "ties": 40.8, "regmean": 41.4, "wemoe": 14.6, "simple_average": 40.4,
            "not_published": 50.0}
    result = compare(ours, "fusionbench-clip-vit-b32-ta8", pretrained=36.1, individual=64.6,
                     held_out=["regmean", "wemoe"], resamples=300)
    rows = {r["method"]: r for r in result["methods"]}
    assert [r["method"] for r in result["methods"]] == ["wemoe", "regmean", "ties", "task_arithmetic",
                                                         "simple_average"]  # best published first
    ta = rows["task_arithmetic"]
    assert ta["published"] == 68.0 and ta["published_name"] == "Task Arithmetic (λ=.3)"
    assert ta["gap_share_ours"] == pytest.approx(2.5 / 28.5)
    assert ta["gap_share_published"] == pytest.approx((68.0 - 48.2) / (90.3 - 48.2))
    assert rows["wemoe"]["rank_published"] == 1 and rows["wemoe"]["rank_ours"] == 5
    assert rows["regmean"]["rank_ours"] == 1 and rows["regmean"]["held_out"] and not ta["held_out"]
    assert result["references"]["published"] == {"pretrained": 48.2, "individual": 90.3}
    groups = result["agreement"]
    assert sorted(groups["calibration"]["methods"] + groups["held_out"]["methods"]) == sorted(groups["all"]["methods"])
    assert groups["held_out"]["n"] == 2 and groups["held_out"]["spearman"]["estimate"] is None
    assert result["unmatched"]["ours"] == ["not_published"]
    assert "WUDI-Merging" in result["unmatched"]["published"]


def test_compare_errors():
    with pytest.raises(UnknownComponentError, match="Did you mean: fusionbench-clip-vit-b32-ta8"):
        compare({"ties": 1.0}, "fusionbench-clip-vit-b23-ta8")
    with pytest.raises(FusionBenchError, match="only 2 method"):
        compare({"ties": 1.0, "regmean": 2.0, "mine": 3.0}, "fusionbench-clip-vit-b32-ta8")
    three = {"ties": 1.0, "regmean": 2.0, "wemoe": 3.0}
    with pytest.raises(UnknownComponentError, match="Did you mean: regmean"):
        compare(three, "fusionbench-clip-vit-b32-ta8", held_out=["regmaen"])
    with pytest.raises(FusionBenchError, match="finite number"):
        compare({**three, "tsv_m": float("nan")}, "fusionbench-clip-vit-b32-ta8")


def test_verified_only_drops_secondary_figures_and_references():
    board = published_leaderboard("openclip-vit-b32-ta8")
    every = published_scores(board)
    verified = published_scores(board, statuses=["verified"])
    assert {"tsv_m", "iso_cts", "iso_c"} <= set(every["scores"])
    assert not {"tsv_m", "iso_cts", "iso_c"} & set(verified["scores"])
    assert every["individual"] == 90.5 and verified["individual"] is None  # the B/32 individual row is secondary
    ours = {m: float(i) for i, m in enumerate(verified["scores"])}
    result = compare(ours, "openclip-vit-b32-ta8", pretrained=0.0, individual=100.0, statuses=["verified"],
                     resamples=100)
    assert all(r["gap_share_published"] is None and r["status"] == "verified" for r in result["methods"])


def test_scores_from_json():
    got = scores_from_json({"ties": 40, "_pretrained_": 36.1, "_individual_": 64.6})
    assert got == {"scores": {"ties": 40.0}, "pretrained": 36.1, "individual": 64.6}
    with pytest.raises(FusionBenchError, match="key 'ties' must be a finite number"):
        scores_from_json({"ties": "40"})
    with pytest.raises(FusionBenchError, match="unknown reference key '_base_'"):
        scores_from_json({"_base_": 1.0})
    with pytest.raises(FusionBenchError, match="JSON object"):
        scores_from_json([1, 2])


# -- the shipped data --------------------------------------------------------------------------


def test_every_published_figure_has_a_source_and_a_status():
    boards = published_leaderboards()
    assert {"fusionbench-clip-vit-b32-ta8", "fusionbench-clip-vit-b16-ta8", "fusionbench-clip-vit-l14-ta8",
            "openclip-vit-b32-ta8", "openclip-vit-l14-ta8", "fusionbench-gpt2-glue",
            "fusionbench-flan-t5-base-glue"} <= set(boards)
    for board_id, board in boards.items():
        assert board["source"] and board["model"] and board["tasks"], board_id
        roles = [r["role"] for r in board["rows"]]
        assert roles.count("individual") == 1, board_id
        assert roles.count("pretrained") == (0 if board_id == "fusionbench-gpt2-glue" else 1), board_id
        mapped = [r["method"] for r in board["rows"] if r["method"] is not None]
        assert len(mapped) == len(set(mapped)), f"{board_id}: a method mapped twice"
        for row in board["rows"]:
            assert isinstance(row["source"], str) and row["source"].strip(), (board_id, row["name"])
            assert row["status"] in STATUSES, (board_id, row["name"])
            assert row["role"] in ("pretrained", "individual", "method", "reference"), (board_id, row["name"])
            assert row["method"] is None or row["role"] == "method", (board_id, row["name"])
            assert 0 < row["average"] < 100, (board_id, row["name"])


def test_per_task_figures_average_to_the_published_average():
    """A transcription check: rounded per-task figures and a rounded average differ by at most 0.1."""
    checked = 0
    for board_id, board in published_leaderboards().items():
        for row in board["rows"]:
            if "tasks" not in row:
                continue
            assert list(row["tasks"]) == board["tasks"], (board_id, row["name"])
            mean = sum(row["tasks"].values()) / len(row["tasks"])
            if row.get("note", "").startswith("inconsistent with its own row"):
                assert abs(mean - row["average"]) > 0.1  # the flag is true, so it stays needed
                continue
            assert mean == pytest.approx(row["average"], abs=0.1), (board_id, row["name"], mean)
            checked += 1
    assert checked >= 50  # the rows with per-task columns (53 when written)


def test_mapped_names_are_registered_methods():
    from fusionbench_core.plugins import INSTALL_HINTS, get_host
    from fusionbench_core.registry import is_installed

    if not all(is_installed(d) for d in (*INSTALL_HINTS[""], "fusionbench-mixing")):
        pytest.skip("the method plugins are not all installed")
    registered = set(get_host().registry("method").names())
    for board_id, board in published_leaderboards().items():
        for row in board["rows"]:
            assert row["method"] is None or row["method"] in registered, (board_id, row["name"], row["method"])


def test_summaries_count_methods_and_matches():
    rows = {r["id"]: r for r in leaderboard_summaries()}
    b32 = rows["fusionbench-clip-vit-b32-ta8"]
    board = published_leaderboard("fusionbench-clip-vit-b32-ta8")
    assert b32["methods"] == sum(r["role"] == "method" for r in board["rows"])
    assert b32["matched"] == len(published_scores(board)["scores"]) == 16
    assert len(b32["tasks"]) == 8 and b32["source"] == "tanganke/fusion_bench:docs/modelpool/clip_vit.md"
