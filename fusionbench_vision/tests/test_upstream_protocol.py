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
