"""Robustness: the seven corruptions are deterministic and change the images; the robustness pool runs."""

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


def test_robustness_pool_runs_clean_and_corrupted(clip_roots, fb_cli):
    result = fb_cli("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-robustness",
                    "-s", "taskpool.examples=4", "-s", "taskpool.num_workers=0",
                    "-o", str(clip_roots[0].parent / "run-robust"), "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json["tasks"]
    assert len(rows) == len(ROBUSTNESS_TASKS) * (1 + len(CORRUPTIONS))
    assert {row.split("/")[0] for row in rows} == set(ROBUSTNESS_TASKS)
    # A corrupted test set scores differently from the clean one (losses are continuous).
    assert any(rows[f"{t}/gaussian_noise"]["loss"] != rows[t]["loss"] for t in ROBUSTNESS_TASKS)
