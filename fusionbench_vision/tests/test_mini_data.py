"""Tests of the mini vision tasks, built from the real packaged sources with small split sizes.

Each task is skipped, with the missing package named, when its sources are not installed
(``scripts/install-offline-data.sh`` installs them).
"""

from __future__ import annotations

import numpy as np
import pytest
from fusionbench_core.suitekit.testing import built, cache  # noqa: F401  (shared fixtures)

pytest.importorskip("datasets")
pytest.importorskip("PIL")
data = pytest.importorskip("fusionbench_vision.mini.data")

SMALL = {
    "fashion_mnist": (200, 50, 100),
    "mnist": (200, 50, 100),
    "digits": (200, 50, 100),
    "twemoji": (90, 30, 45),
    "noto_emoji": (90, 30, 45),
    "emoji_subcategory": (60, 20, 30),
    "font_letters": (104, 52, 78),
    "font_digits": (100, 50, 100),
    "skin_tone": (100, 40, 80),
}
# The emoji subcategory sizes are caps: the task keeps only the emoji of its 10 classes.
EXACT = set(SMALL) - {"emoji_subcategory"}
realdata = pytest.mark.realdata


@pytest.fixture(scope="module")
def task_catalog():
    """The catalog the shared ``built`` fixture loads from."""
    return data.MINI_VISION_TASKS


@pytest.fixture(scope="module")
def task_sizes():
    """The small sizes the shared ``built`` fixture loads each task at."""
    return SMALL


def test_registry_lists_every_task():
    assert set(data.MINI_VISION_TASKS) == set(SMALL)
    for name, spec in data.MINI_VISION_TASKS.items():
        assert spec.name == name and spec.num_classes >= 2 and spec.description
        assert callable(spec.loader) and len(spec.default_sizes) == 3
    with pytest.raises(KeyError, match="unknown mini-vision task"):
        data.load_task("no_such_task")


@realdata
@pytest.mark.parametrize("name", sorted(SMALL))
def test_task_splits_labels_and_images(built, name):
    dsd = built(name)
    assert list(dsd) == ["train", "validation", "test"]
    sizes = tuple(len(dsd[s]) for s in dsd)
    if name in EXACT:
        assert sizes == SMALL[name]
    else:
        assert all(0 < n <= cap for n, cap in zip(sizes, SMALL[name]))
    spec = data.MINI_VISION_TASKS[name]
    uids = {}
    for split, ds in dsd.items():
        names = ds.features["label"].names
        assert len(names) == spec.num_classes and len(set(names)) == len(names)
        images, labels = data.as_arrays(ds)
        assert images.shape == (len(ds), 32, 32, 3) and images.dtype == np.uint8
        assert labels.min() >= 0 and labels.max() < spec.num_classes
        assert images.std() > 10  # real pictures, not blank canvases
        uids[split] = set(ds["uid"][:])
        assert len(uids[split]) == len(ds)
    assert not (uids["train"] & uids["validation"] or uids["train"] & uids["test"] or uids["validation"] & uids["test"])


@realdata
@pytest.mark.parametrize("name", ["mnist", "twemoji", "font_letters"])
def test_same_seed_same_bytes_other_seed_other_split(built, name):
    cached = built(name)
    again = data.load_task(name, sizes=SMALL[name])  # from the cache
    fresh = data.load_task(name, sizes=SMALL[name], cache=False)  # rebuilt from the sources
    digest = data.content_digest(cached)
    assert data.content_digest(again) == digest == data.content_digest(fresh)
    other = data.load_task(name, sizes=SMALL[name], seed=1, cache=False)
    assert data.content_digest(other) != digest


@realdata
def test_cache_layout_is_atomic(built, cache):
    built("mnist")
    path = data.task_cache_dir("mnist", sizes=SMALL["mnist"])
    assert path.parent == cache / "datasets" / "mini-vision"
    assert path.name == "mnist-v1-n200-50-100"
    assert data.task_cache_dir("mnist").name == "mnist-v1"
    assert (path / "fusionbench_meta.json").exists() and (path / "dataset_dict.json").exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


@realdata
def test_twemoji_and_noto_are_the_same_emoji_by_another_artist(built):
    twemoji, noto = built("twemoji"), built("noto_emoji")
    for split in twemoji:
        assert twemoji[split]["uid"][:] == noto[split]["uid"][:]
        assert twemoji[split]["label"][:] == noto[split]["label"][:]
        assert not np.array_equal(data.as_arrays(twemoji[split])[0], data.as_arrays(noto[split])[0])


@realdata
def test_emoji_subcategory_keeps_the_twemoji_split(built):
    sub = built("emoji_subcategory")
    rows, split = data._emoji_split(0)
    for name, ds in sub.items():
        assert set(ds["uid"][:]) <= {rows[i]["unified"] for i in split[name]}


@realdata
@pytest.mark.parametrize("name", ["font_letters", "font_digits"])
def test_font_glyph_splits_use_disjoint_font_designs(built, name):
    dsd = built(name)
    designs = {split: {uid.split("/")[0] for uid in ds["uid"][:]} for split, ds in dsd.items()}
    assert not (designs["train"] & designs["validation"] or designs["train"] & designs["test"])
    assert not designs["validation"] & designs["test"]


@realdata
def test_skin_tone_splits_by_emoji_with_balanced_tones_and_both_artists(built):
    dsd = built("skin_tone")
    figures = {split: {uid.split("/")[1] for uid in ds["uid"][:]} for split, ds in dsd.items()}
    assert not (figures["train"] & figures["validation"] or figures["train"] & figures["test"])
    assert not figures["validation"] & figures["test"]
    test = dsd["test"]
    assert np.bincount(data.as_arrays(test)[1], minlength=5).tolist() == [16] * 5  # 80 images, stratified
    assert {uid.split("/")[0] for uid in test["uid"][:]} == {"twitter", "google"}
    assert dsd["train"].features["label"].names == list(data.SKIN_TONES)


def test_missing_source_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONBENCH_DATA_DIR", str(tmp_path))
    assert not data.sources_available("twemoji")
    with pytest.raises(FileNotFoundError) as err:
        data.load_task("twemoji", cache=False)
    message = str(err.value)
    assert isinstance(err.value, data.MissingSourceError)
    assert "\n" not in message and "emoji-datasource-twitter" in message
    assert "scripts/install-offline-data.sh" in message
