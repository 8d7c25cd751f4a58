"""Per-example predictions of the mini-text pools reach the result store (#16), in a fixed order for `fb compare`."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fusionbench_core.experiments.store import open_store  # noqa: E402

from .test_mini_suite import suite_cache, tiny  # noqa: E402, F401 - the tiny mini-text builder


def test_mini_text_task_pool_reports_predictions_and_fb_run_stores_them(tiny, fb_cli, tmp_path):
    from fusionbench_core.protocols import PRETRAINED
    from fusionbench_nlp.mini.pool import MiniTextModelPool, MiniTextTaskPool

    pool, tasks = MiniTextModelPool(), MiniTextTaskPool()
    tasks.bind(pool)
    first = tasks.evaluate(pool.load_model(PRETRAINED))
    second = tasks.evaluate_split(pool.load_model("sentiment"), "test")
    for report in (first, second):
        assert sorted(report.predictions) == ["gloss_match", "sentiment"]
        for task, p in report.predictions.items():
            assert len(p.predicted) == len(p.target) == 24
            assert sum(a == b for a, b in zip(p.predicted, p.target)) / 24 == pytest.approx(
                report.tasks[task]["accuracy"])
    # Scored in the builder's (length-sorted) order, the same for every model: the runs pair up.
    assert first.predictions["sentiment"].target == second.predictions["sentiment"].target
    validation = tasks.evaluate_split(pool.load_model(PRETRAINED), "validation")
    assert all(len(p.target) == 24 for p in validation.predictions.values())

    db = str(tmp_path / "runs.sqlite3")
    out = fb_cli("run", "-p", "mini-text", "-o", str(tmp_path / "run"), "--store", db, "--json")
    assert out.exit_code == 0, out.stderr
    with open_store(db) as store:
        (row,) = store.runs()
        preds = store.predictions(row["id"], "test")
        assert sorted(preds) == ["gloss_match", "sentiment"]
        for task, p in preds.items():
            hits = sum(a == b for a, b in zip(p["predicted"], p["target"]))
            assert hits / 24 == pytest.approx(out.json["tasks"][task]["accuracy"])
