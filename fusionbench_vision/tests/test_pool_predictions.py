"""Per-example predictions reach the result store from the mini-vision pools and the CLIP task pool (#16).

`fb compare` pairs two runs example by example, so every task pool of a suite must report
:class:`~fusionbench_core.protocols.Predictions` in a fixed order, and `fb run` / `fb sweep` must store them.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fusionbench_core.experiments.store import open_store  # noqa: E402

from .test_mini_suite import suite_cache, tiny  # noqa: E402, F401 - the tiny mini-vision builder


def check_predictions(report, tasks: list[str], n: int) -> None:
    """Each task's predictions: ``n`` examples, and the accuracy they give is the reported one."""
    assert sorted(report.predictions) == sorted(tasks)
    for task in tasks:
        p = report.predictions[task]
        assert len(p.predicted) == len(p.target) == n
        assert sum(a == b for a, b in zip(p.predicted, p.target)) / n == pytest.approx(report.tasks[task]["accuracy"])


def test_mini_vision_task_pool_reports_predictions_on_both_splits(tiny):
    from fusionbench_core.protocols import PRETRAINED
    from fusionbench_vision.mini.pool import MiniVisionModelPool, MiniVisionTaskPool

    pool, tasks = MiniVisionModelPool(), MiniVisionTaskPool()
    tasks.bind(pool)
    test = tasks.evaluate(pool.load_model(PRETRAINED))
    check_predictions(test, ["mnist", "digits"], 24)
    validation = tasks.evaluate_split(pool.load_model("mnist"), "validation")
    check_predictions(validation, ["mnist", "digits"], 24)
    again = tasks.evaluate(pool.load_model("digits"))  # another model: the same examples, in the same order
    assert again.predictions["mnist"].target == test.predictions["mnist"].target
    assert MiniVisionTaskPool(max_examples=10).evaluate(pool.load_model(PRETRAINED)).predictions["digits"].target == \
        test.predictions["digits"].target[:10]


def test_fb_run_and_fb_sweep_store_mini_vision_predictions_for_fb_compare(tiny, fb_cli, tmp_path):
    db = str(tmp_path / "runs.sqlite3")
    run = fb_cli("run", "-p", "mini-vision", "-m", "simple_average", "-o", str(tmp_path / "run"), "--store", db,
                 "--json")
    assert run.exit_code == 0, run.stderr
    spec = tmp_path / "sweep.yaml"
    spec.write_text("methods: {task_arithmetic: {scaling_factor: [0.3, 0.8]}}\nsuites: [mini-vision]\n"
                    "reference: false\n")
    swept = fb_cli("sweep", str(spec), "--store", db, "--json")
    assert swept.exit_code == 0, swept.stderr
    with open_store(db) as store:
        runs = store.runs()
        assert [r["method"] for r in runs] == ["simple_average", "task_arithmetic", "task_arithmetic"]
        for row in runs:
            splits = ["test"] if row["method"] == "simple_average" else ["test", "validation"]
            for split in splits:
                preds = store.predictions(row["id"], split)
                assert sorted(preds) == ["digits", "mnist"] and all(len(p["target"]) == 24 for p in preds.values())
                metrics = store.metrics([row["id"]])[row["id"]][split]
                for task, p in preds.items():
                    hits = sum(a == b for a, b in zip(p["predicted"], p["target"]))
                    assert hits / 24 == pytest.approx(metrics[task]["accuracy"])
        ids = [r["id"] for r in runs]
    compared = fb_cli("compare", str(ids[1]), str(ids[0]), "--store", db, "--resamples", "200", "--json")
    assert compared.exit_code == 0, compared.stderr
    assert compared.json["examples"] == {"mnist": 24, "digits": 24}


def test_clip_task_pool_reports_predictions_in_the_image_order(clip_roots):
    from fusionbench_core.protocols import PRETRAINED
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.taskpool import CLIPZeroShotTaskPool

    pool = CLIPVisionModelPool("clip-vit-b32-ta8")
    tasks = CLIPZeroShotTaskPool("clip-vit-b32-ta8", num_workers=0, device="cpu", tasks=["svhn", "gtsrb"])
    report = tasks.evaluate(pool.load_model(PRETRAINED))
    for task in ("svhn", "gtsrb"):
        _, labels = tasks.images(task).load()
        check_predictions(report, ["svhn", "gtsrb"], len(labels))
        assert list(report.predictions[task].target) == [int(x) for x in labels]
    other = tasks.evaluate(pool.load_model("svhn"))
    assert other.predictions["svhn"].target == report.predictions["svhn"].target


def test_fb_run_stores_clip_predictions(clip_roots, fb_cli, tmp_path):
    db = str(tmp_path / "runs.sqlite3")
    out = fb_cli("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-ta8", "-s", "taskpool.tasks=svhn,gtsrb",
                 "-s", "taskpool.num_workers=0", "-o", str(tmp_path / "run"), "--store", db, "--json")
    assert out.exit_code == 0, out.stderr
    with open_store(db) as store:
        (row,) = store.runs()
        preds = store.predictions(row["id"], "test")
        assert sorted(preds) == ["gtsrb", "svhn"]
        for task, p in preds.items():
            assert p["target"] and len(p["predicted"]) == len(p["target"])
            hits = sum(a == b for a, b in zip(p["predicted"], p["target"]))
            assert hits / len(p["target"]) == pytest.approx(out.json["tasks"][task]["accuracy"])
