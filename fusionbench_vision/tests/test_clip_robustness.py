"""Robustness: upstream's pre-corrupted hub splits by default; generated ones follow upstream's generator."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from fusionbench_vision.corruptions import corrupt
from fusionbench_vision.suites import CORRUPTIONS, ROBUSTNESS_TASKS

RANDOM_ONES = {"motion_blur", "impulse_noise", "gaussian_noise", "spatter"}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 48, dtype=np.float64)
    base = (smooth[:, None, None] * 0.5 + smooth[None, :, None] * 0.5).repeat(3, axis=2)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, size=base.shape), 0, 255).astype(np.uint8))


def _grey(value: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corruption_is_deterministic_and_changes_the_image(image, corruption):
    first = np.asarray(corrupt(image, corruption, 3, seed=7, index=5))
    again = np.asarray(corrupt(image, corruption, 3, seed=7, index=5))
    assert first.dtype == np.uint8 and first.shape[2] == 3
    np.testing.assert_array_equal(first, again)
    if corruption != "pixelate":
        assert first.shape == np.asarray(image).shape
        assert np.abs(first.astype(int) - np.asarray(image).astype(int)).mean() > 0.5
    if corruption in RANDOM_ONES:
        assert any(not np.array_equal(first, np.asarray(corrupt(image, corruption, 3, seed=7, index=i)))
                   for i in range(6, 12))


def test_the_severity_constants_are_upstreams_cifar10c_values():
    from fusionbench_vision import corruptions as c

    assert c.GAUSSIAN_NOISE == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert c.IMPULSE_NOISE == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert c.CONTRAST == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert c.JPEG_QUALITY == (80, 65, 58, 50, 40)
    assert c.PIXELATE == (0.95, 0.9, 0.85, 0.75, 0.65)
    assert c.MOTION_BLUR == ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))


def test_contrast_by_hand():
    # One channel value per pixel, the same in R, G, B: mean 138.75; (v − 138.75)·0.75 + 138.75, truncated.
    values = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    out = np.asarray(corrupt(Image.fromarray(np.stack([values] * 3, axis=-1)), "contrast", 1, seed=0, index=0))
    np.testing.assert_array_equal(out[..., 0], [[34, 109], [184, 225]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # Severity 5 (c = 0.15): 0.85·138.75 + 0.15·v = 117.9375 + 0.15·v.
    out = np.asarray(corrupt(Image.fromarray(np.stack([values] * 3, axis=-1)), "contrast", 5, seed=0, index=0))
    np.testing.assert_array_equal(out[..., 1], [[117, 132], [147, 156]])


@pytest.mark.parametrize("size", [(64, 64), (100, 60), (17, 300)])
def test_pixelate_returns_32_by_32_whatever_the_size(size):
    for severity in range(1, 6):
        out = corrupt(_grey(90, size), "pixelate", severity, seed=0, index=0)
        assert out.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(out), 90)


def test_pixelate_by_hand():
    # 64 columns, 0 left of 32 and 200 right of it. Severity 4: box to int(32·0.75) = 24, each output
    # column 64/24 wide, so the edge falls exactly after column 12; then 24 → 32, after column 16.
    x = np.zeros((64, 64, 3), dtype=np.uint8)
    x[:, 32:] = 200
    out = np.asarray(corrupt(Image.fromarray(x), "pixelate", 4, seed=0, index=0))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[:, :16], 0)
    np.testing.assert_array_equal(out[:, 16:], 200)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_noise_has_upstreams_standard_deviation(severity):
    from fusionbench_vision.corruptions import GAUSSIAN_NOISE

    out = np.asarray(corrupt(_grey(128, (128, 128)), "gaussian_noise", severity, seed=1, index=0)).astype(float)
    noise = (out + 0.5 - 128) / 255  # truncation lowers each value by 0.5 on average
    assert abs(noise.std() / GAUSSIAN_NOISE[severity - 1] - 1) < 0.03
    assert abs(noise.mean()) < 0.003


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_flips_upstreams_fraction_to_black_and_white(severity):
    from fusionbench_vision.corruptions import IMPULSE_NOISE

    out = np.asarray(corrupt(_grey(128, (200, 200)), "impulse_noise", severity, seed=2, index=0))
    assert set(np.unique(out)) <= {0, 128, 255}
    amount = IMPULSE_NOISE[severity - 1]
    assert abs((out != 128).mean() / amount - 1) < 0.1
    assert abs((out == 255).mean() / (out != 128).mean() - 0.5) < 0.05


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_uses_upstreams_quality(image, severity):
    quality = [80, 65, 58, 50, 40][severity - 1]
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(corrupt(image, "jpeg_compression", severity, seed=0, index=0)), expected)


def test_motion_blur_kernel_by_hand():
    from fusionbench_vision.corruptions import motion_blur_kernel

    weights, offsets = motion_blur_kernel(6, 1, 0.0)
    assert len(weights) == 13 and offsets == [(0, i) for i in range(13)]
    gauss = np.exp(-np.arange(13) ** 2 / 2.0)
    np.testing.assert_allclose(weights, gauss / gauss.sum())
    assert motion_blur_kernel(6, 1, 90.0)[1] == [(i, 0) for i in range(13)]
    # 45°: ceil(i·0.7071 − 0.5) for i = 0…4 is 0, 1, 1, 2, 3.
    assert motion_blur_kernel(2, 1, 45.0)[1] == [(0, 0), (1, 1), (1, 1), (2, 2), (3, 3)]
    assert len(motion_blur_kernel(9, 2.5, 10.0)[0]) == 19


def test_motion_blur_spreads_a_point_along_the_kernel():
    from fusionbench_vision.corruptions import corrupt, motion_blur_kernel

    x = np.zeros((41, 41, 3), dtype=np.uint8)
    x[20, 20] = 255
    seed = [0, zlib.crc32(b"motion_blur"), 1, 3]
    angle = np.random.default_rng(seed).uniform(-45, 45)
    weights, offsets = motion_blur_kernel(6, 1, angle)
    expected = np.zeros((41, 41))
    for w, (dy, dx) in zip(weights, offsets):  # out[r, c] = Σ w_i x[r + dy_i, c + dx_i]
        expected[20 - dy, 20 - dx] += w * 255
    out = np.asarray(corrupt(Image.fromarray(x), "motion_blur", 1, seed=0, index=3))
    np.testing.assert_array_equal(out[..., 0], np.rint(expected))


def test_canny_and_histogram_equalisation_by_hand():
    from fusionbench_vision.corruptions import canny, equalize_hist

    step = np.zeros((10, 10), dtype=np.uint8)
    step[:, 5:] = 255
    edges = canny(step)
    # |gx| = 4·255 on columns 4 and 5; thinning keeps the first of equal neighbours.
    np.testing.assert_array_equal(np.flatnonzero(edges.any(axis=0)), [4])
    assert edges[:, 4].tolist() == [255] * 10
    np.testing.assert_array_equal(canny(np.full((8, 8), 7, dtype=np.uint8)), 0)
    # Levels 0, 0, 1, 2: cumulative counts above the first level · 255 / 2 → 0, 0, 127.5 → 128, 255.
    np.testing.assert_array_equal(equalize_hist(np.array([[0, 0], [1, 2]], dtype=np.uint8)), [[0, 0], [128, 255]])


def test_spatter_adds_water_and_covers_with_mud(image):
    x = np.asarray(image).astype(int)
    water = np.asarray(corrupt(image, "spatter", 3, seed=4, index=0)).astype(int)
    assert (water >= x).all() and (water > x).any()  # water only brightens towards pale turquoise
    mud = np.asarray(corrupt(image, "spatter", 5, seed=4, index=0)).astype(int)
    changed = (mud != x).any(axis=-1)
    assert changed.any() and not changed.all()
    brown = np.array([63, 42, 20])  # mud pixels are pulled towards mud brown, at least 80 % of the way
    assert (np.abs(mud[changed] - brown) <= 0.2 * np.abs(x[changed] - brown) + 1).all()


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


def test_generated_corruptions_apply_to_the_raw_image_before_preprocessing(clip_roots, corrupted_root, monkeypatch):
    import datasets

    from fusionbench_vision.taskpool import CLIPRobustnessTaskPool
    from fusionbench_vision.tasks import get_task

    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(corrupted_root))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(corrupted_root.parent / "cache-generated"))
    pool = CLIPRobustnessTaskPool("clip-vit-b32-robustness", tasks=["resisc45"], num_workers=0,
                                  corruption_source="generated", severity=2, seed=3)
    processing = pool.classifier.processing
    spec = get_task("resisc45")
    rows = datasets.load_from_disk(str(corrupted_root / spec.dataset))["test"]
    for corruption in ("pixelate", "gaussian_noise"):
        images, _ = pool.images("resisc45", corruption).load()
        expected = np.stack([processing(corrupt(row[spec.image_column].convert("RGB"), corruption, 2, seed=3, index=i))
                             for i, row in enumerate(rows)])
        np.testing.assert_array_equal(images, expected)
    # Severity 2: box to int(32·0.9) = 28, then 32×32, then the CLIP resize (not the pixelated 224 crop).
    pixelated, _ = pool.images("resisc45", "pixelate").load()
    raw = rows[0][spec.image_column].convert("RGB")
    assert raw.size != (32, 32)
    np.testing.assert_array_equal(pixelated[0], processing(raw.resize((28, 28), Image.Resampling.BOX)
                                                           .resize((32, 32), Image.Resampling.BOX)))
