"""Robustness: upstream's pre-corrupted hub splits by default; generated corruptions are deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from fusionbench_vision.corruptions import corrupt
from fusionbench_vision.suites import CORRUPTIONS, ROBUSTNESS_TASKS

RANDOM_ONES = {"motion_blur", "impulse_noise", "gaussian_noise", "spatter"}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 48, dtype=np.float64)
    base = (smooth[None, :, None] * 0.5 + smooth[None, None, :] * 0.5).repeat(3, axis=0)
    return np.clip(base + rng.normal(0, 20, size=base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corruption_is_deterministic_and_changes_the_image(image, corruption):
    first = corrupt(image, corruption, 3, seed=7, index=5)
    again = corrupt(image, corruption, 3, seed=7, index=5)
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - image.astype(int)).mean() > 1.0
    if corruption in RANDOM_ONES:
        # Random draws depend on the example index (motion blur only through its angle, so try a few).
        assert any(not np.array_equal(first, corrupt(image, corruption, 3, seed=7, index=i)) for i in range(6, 12))


@pytest.mark.parametrize("corruption", ["gaussian_noise", "contrast", "pixelate", "impulse_noise"])
def test_higher_severity_corrupts_more(image, corruption):
    mild = np.abs(corrupt(image, corruption, 1, seed=0, index=0).astype(int) - image).mean()
    strong = np.abs(corrupt(image, corruption, 5, seed=0, index=0).astype(int) - image).mean()
    assert strong > mild


def test_contrast_keeps_channel_means(image):
    out = corrupt(image, "contrast", 5, seed=0, index=0)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), image.mean(axis=(1, 2)), atol=1.0)


def test_bad_arguments_are_refused(image):
    with pytest.raises(ValueError, match="severity"):
        corrupt(image, "contrast", 6, seed=0, index=0)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "fog", 1, seed=0, index=0)


def test_robustness_pool_runs_clean_and_generated_corruptions(clip_roots, fb_cli):
    result = fb_cli("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-robustness",
                    "-s", "taskpool.examples=4", "-s", "taskpool.num_workers=0",
                    "-s", "taskpool.corruption_source=generated",
                    "-o", str(clip_roots[0].parent / "run-robust"), "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json["tasks"]
    assert len(rows) == len(ROBUSTNESS_TASKS) * (1 + len(CORRUPTIONS))
    assert {row.split("/")[0] for row in rows} == set(ROBUSTNESS_TASKS)
    # A corrupted test set scores differently from the clean one (losses are continuous).
    assert any(rows[f"{t}/gaussian_noise"]["loss"] != rows[t]["loss"] for t in ROBUSTNESS_TASKS)


@pytest.fixture(scope="module")
def corrupted_root(clip_roots, tmp_path_factory):
    """The four robustness datasets in upstream's layout: clean test and train plus one split per corruption."""
    from fusionbench_vision.testing import build_data_root

    root = tmp_path_factory.mktemp("clip-corrupted") / "data"
    build_data_root(root, ROBUSTNESS_TASKS, test_examples=5, extra_splits=tuple(CORRUPTIONS), seed=11)
    return root


def _preprocessed_split(root, task: str, split: str, processing) -> np.ndarray:
    """An independent read of a split: load_from_disk, then the pool's preprocessing, image by image."""
    import datasets

    from fusionbench_vision.tasks import get_task

    spec = get_task(task)
    rows = datasets.load_from_disk(str(root / spec.dataset))[split]
    return np.stack([processing(row[spec.image_column]) for row in rows])


def test_corrupted_rows_are_upstreams_hub_splits_by_default(clip_roots, corrupted_root, monkeypatch):
    from fusionbench_vision.taskpool import CLIPRobustnessTaskPool

    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(corrupted_root))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(corrupted_root.parent / "cache"))
    pool = CLIPRobustnessTaskPool("clip-vit-b32-robustness", tasks=["gtsrb"], num_workers=0)
    assert pool.corruption_source == "hub"
    processing = pool.classifier.processing
    for corruption in ("motion_blur", "pixelate"):
        images, _ = pool.images("gtsrb", corruption).load()
        np.testing.assert_array_equal(images, _preprocessed_split(corrupted_root, "gtsrb", corruption, processing))
    clean, _ = pool.images("gtsrb").load()
    np.testing.assert_array_equal(clean, _preprocessed_split(corrupted_root, "gtsrb", "test", processing))


def test_test_time_data_of_a_robustness_pool_can_be_the_corrupted_split(clip_roots, corrupted_root, monkeypatch):
    import torch

    from fusionbench_core.errors import ConfigError
    from fusionbench_core.protocols import DataRequest
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.taskpool import CLIPRobustnessTaskPool

    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(corrupted_root))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(corrupted_root.parent / "cache"))
    pool = CLIPVisionModelPool("clip-vit-b32-robustness", test_corruption="contrast")
    pixels, labels = next(pool.batches("eurosat", DataRequest(split="test", labelled=False), batch_size=16))
    assert labels is None and len(pixels) == 5
    taskpool = CLIPRobustnessTaskPool("clip-vit-b32-robustness", num_workers=0)
    expected = _preprocessed_split(corrupted_root, "eurosat", "contrast", taskpool.classifier.processing)
    np.testing.assert_allclose(pixels.numpy(), taskpool.classifier.pixels(torch.from_numpy(expected)).cpu().numpy(),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="test_corruption"):
        CLIPVisionModelPool("clip-vit-b32-ta8", test_corruption="contrast")
