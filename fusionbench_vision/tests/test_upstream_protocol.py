"""Where the CLIP suites follow upstream FusionBench's protocol (v0.2.33), on tiny data in upstream's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusionbench_core.protocols import DataRequest


@pytest.fixture(scope="module")
def big_train_root(tmp_path_factory):
    """DTD with 30 train images (upstream's validation set is int(30 · 0.1) = 3 of them)."""
    from fusionbench_vision.testing import build_data_root

    root = tmp_path_factory.mktemp("clip-val") / "data"
    build_data_root(root, ["dtd"], train_examples=30, test_examples=4, seed=5)
    return root


def test_validation_requests_get_upstreams_seeded_ten_percent_of_train(clip_roots, big_train_root, monkeypatch):
    from fusionbench_vision.modelpool import CLIPVisionModelPool

    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(big_train_root))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(big_train_root.parent / "cache"))
    pool = CLIPVisionModelPool("clip-vit-b32-ta8", tasks=["dtd"])
    train = list(pool.batches("dtd", DataRequest(split="train", examples=None), batch_size=64))
    validation = list(pool.batches("dtd", DataRequest(split="validation", examples=None), batch_size=64))
    train_x, train_y = train[0]
    val_x, val_y = validation[0]
    assert len(train_x) == 30 and len(validation) == 1 and len(val_x) == 3
    # Upstream: train_validation_split(train, validation_fraction=0.1, random_seed=0, return_split="val").
    _, held_out = torch.utils.data.random_split(range(30), [27, 3], generator=torch.Generator().manual_seed(0))
    assert list(held_out.indices) != [27, 28, 29]  # a real permutation, not the tail
    torch.testing.assert_close(val_x, train_x[list(held_out.indices)], rtol=0, atol=0)
    assert val_y.tolist() == train_y[list(held_out.indices)].tolist()
    capped = next(pool.batches("dtd", DataRequest(split="validation", examples=2), batch_size=64))[1]
    assert capped.tolist() == val_y[:2].tolist()


def test_validation_indices_follow_random_split():
    from fusionbench_vision.data import validation_indices

    for n in (9, 10, 101, 2000):
        _, held_out = torch.utils.data.random_split(range(n), [n - n // 10, n // 10],
                                                    generator=torch.Generator().manual_seed(0))
        np.testing.assert_array_equal(validation_indices(n), np.array(held_out.indices, dtype=np.int64))


def test_upstream_class_names_are_selectable_byte_for_byte():
    from fusionbench_vision.tasks import get_task

    for task, index, ours, upstream in (("cifar100", 26, "crab", "cra"),
                                        ("oxford_flowers102", 59, "pink-yellow dahlia", "pink-yellow dahlia?")):
        fixed, theirs = get_task(task).classnames, get_task(task, "upstream").classnames
        assert (fixed[index], theirs[index]) == (ours, upstream)
        assert [i for i, (a, b) in enumerate(zip(fixed, theirs)) if a != b] == [index]
    assert get_task("dtd", "upstream") == get_task("dtd")


def test_the_task_pool_scores_with_upstreams_class_names_when_asked(clip_roots, tmp_path, monkeypatch):
    from fusionbench_core.protocols import PRETRAINED
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.taskpool import CLIPZeroShotTaskPool
    from fusionbench_vision.tasks import get_task
    from fusionbench_vision.testing import build_data_root

    build_data_root(tmp_path / "data", ["cifar100"])
    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    model = CLIPVisionModelPool("clip-vit-b32-ta8").load_model(PRETRAINED)
    reports = {}
    for names in ("fixed", "upstream"):
        pool = CLIPZeroShotTaskPool("clip-vit-b32-tall14", tasks=["cifar100"], classnames=names, num_workers=0)
        reports[names] = pool.evaluate(model).tasks["cifar100"]
        head = pool.classifier.head(get_task("cifar100", names)).cpu()
        rebuilt = pool.classifier.build_head(get_task("cifar100", names))
        torch.testing.assert_close(head, rebuilt)
        heads = {n: pool.classifier.head_file(get_task("cifar100", n)) for n in ("fixed", "upstream")}
        assert heads[names].exists()
    fixed_head = pool.classifier.head(get_task("cifar100")).cpu()
    upstream_head = pool.classifier.head(get_task("cifar100", "upstream")).cpu()
    differs = [i for i in range(100) if not torch.allclose(fixed_head[i], upstream_head[i])]
    assert differs == [26]
    assert reports["fixed"]["loss"] != reports["upstream"]["loss"]


def test_generalisation_suite_merges_the_seen_experts_and_reports_seen_and_unseen_apart(clip_roots, fb_cli):
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.suites import SUITES

    suite = SUITES["clip-vit-b32-generalization-exp1"]
    assert CLIPVisionModelPool(suite.name).model_names == suite.expert_tasks
    result = fb_cli("run", "-m", "task_arithmetic", "-p", suite.name, "-s", "taskpool.num_workers=0",
                    "-o", str(clip_roots[0].parent / "run-exp1"), "--json")
    assert result.exit_code == 0, result.stderr
    rows, average = result.json["tasks"], result.json["average"]
    assert list(rows) == suite.tasks
    seen = [rows[t]["accuracy"] for t in suite.expert_tasks]
    unseen = [rows[t]["accuracy"] for t in ("mnist", "eurosat")]
    assert average["seen_accuracy"] == pytest.approx(sum(seen) / 6)
    assert average["unseen_accuracy"] == pytest.approx(sum(unseen) / 2)
    assert average["accuracy"] == pytest.approx((sum(seen) + sum(unseen)) / 8)
    assert all(("unseen_accuracy" in rows[t]) is (t in suite.unseen) for t in suite.tasks)
