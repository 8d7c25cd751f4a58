"""Tests of the mini text tasks, built from the real packaged sources with small split sizes.

Each task is skipped, with the missing package named, when its sources are not installed
(``scripts/install-offline-data.sh`` installs them).
"""

from __future__ import annotations

import functools
import random
import sys

import numpy as np
import pytest
from fusionbench_core.suitekit.testing import built, cache  # noqa: F401  (shared fixtures)

if getattr(sys.modules.get("fusionbench_nlp"), "__file__", "") is None:
    del sys.modules["fusionbench_nlp"]

pytest.importorskip("datasets")
data = pytest.importorskip("fusionbench_nlp.mini.data")

SMALL = (120, 40, 60)
realdata = pytest.mark.realdata
TASKS = sorted(data.MINI_TEXT_TASKS)
BALANCED = ("fortune_topic", "language_id", "austen_novel", "bible_section")


@pytest.fixture(scope="module", autouse=True)
def wordnet_parsed_once():
    """Parse each WordNet file once per module: three tasks read them, some tests build twice."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_synsets", functools.cache(data._synsets))
        yield


@pytest.fixture(scope="module")
def task_catalog():
    """The catalog the shared ``built`` fixture loads from."""
    return data.MINI_TEXT_TASKS


@pytest.fixture(scope="module")
def task_sizes():
    """The small sizes the shared ``built`` fixture loads each task at."""
    return SMALL


def test_registry_lists_every_task():
    assert set(TASKS) == {
        "sentiment", "tweet_device", "fortune_topic", "language_id",
        "supersense", "austen_novel", "bible_section", "gloss_match",
    }  # fmt: skip
    for name, spec in data.MINI_TEXT_TASKS.items():
        assert spec.name == name and spec.num_classes >= 2 and spec.description and callable(spec.loader)
        assert spec.default_sizes == (2_000, 500, 1_000)
    with pytest.raises(KeyError, match="unknown mini-text task"):
        data.load_task("no_such_task")


@realdata
@pytest.mark.parametrize("name", TASKS)
def test_task_splits_labels_and_texts(built, name):
    dsd = built(name)
    spec = data.MINI_TEXT_TASKS[name]
    assert list(dsd) == ["train", "validation", "test"]
    assert tuple(len(ds) for ds in dsd.values()) == SMALL
    keys = {}
    for split, ds in dsd.items():
        names = ds.features["label"].names
        assert len(names) == spec.num_classes and len(set(names)) == len(names)
        assert ("text_pair" in ds.column_names) == spec.pair
        rows = ds[:]
        labels = np.asarray(rows["label"])
        assert labels.min() >= 0 and labels.max() < spec.num_classes
        assert all(isinstance(t, str) and t.strip() == t and t for t in rows["text"])
        assert len(set(rows["uid"])) == len(ds)
        keys[split] = (set(rows["uid"]), set(rows["text_pair"] if spec.pair else rows["text"]))
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not keys[a][0] & keys[b][0], f"{name}: a source item is in {a} and {b}"
        assert not keys[a][1] & keys[b][1], f"{name}: a text is in {a} and {b}"


@realdata
@pytest.mark.parametrize("name", BALANCED)
def test_balanced_tasks_have_equal_classes(built, name):
    counts = np.bincount(built(name)["train"]["label"][:], minlength=data.MINI_TEXT_TASKS[name].num_classes)
    assert counts.max() - counts.min() <= 1


@realdata
def test_gloss_match_is_half_matched_and_mismatches_are_real(built):
    train = built("gloss_match")["train"][:]
    assert sum(train["label"]) == len(train["label"]) // 2
    for lemma, definition, label, uid in zip(train["text"], train["text_pair"], train["label"], train["uid"]):
        assert ("+" in uid) == (label == 0)
        assert lemma.lower() not in definition.lower() or label == 0


@realdata
@pytest.mark.parametrize("name", ["sentiment", "bible_section", "gloss_match"])
def test_same_seed_same_bytes_other_seed_other_split(built, name):
    cached = built(name)
    digest = data.content_digest(cached)
    assert data.content_digest(data.load_task(name, sizes=SMALL)) == digest  # from the cache
    assert data.content_digest(data.load_task(name, sizes=SMALL, cache=False)) == digest  # rebuilt
    assert data.content_digest(data.load_task(name, sizes=SMALL, seed=1, cache=False)) != digest


def test_pool_order_does_not_matter():
    examples = [data._Example(f"f#{i:03d}", f"text {i % 7}", i % 3) for i in range(60)]
    shuffled = examples[:]
    random.Random(4).shuffle(shuffled)
    assert data._dedupe(shuffled) == data._dedupe(examples)
    kept = data._dedupe(examples)
    assert len({e.text for e in kept}) == len(kept)


@realdata
def test_cache_layout_is_atomic(built, cache):
    built("bible_section")
    path = data.task_cache_dir("bible_section", sizes=SMALL)
    assert path.parent == cache / "datasets" / "mini-text"
    assert path.name == "bible_section-v1-n120-40-60"
    assert data.task_cache_dir("bible_section").name == "bible_section-v1"
    assert (path / "fusionbench_meta.json").exists() and (path / "dataset_dict.json").exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_missing_source_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "WORDNET_DIR", tmp_path / "wordnet")
    for name, package in (("austen_novel", "r-cran-janeaustenr"), ("supersense", "wordnet-base")):
        assert not data.sources_available(name)
        with pytest.raises(FileNotFoundError) as err:
            data.load_task(name, cache=False)
        message = str(err.value)
        assert isinstance(err.value, data.MissingSourceError)
        assert "\n" not in message and package in message and "scripts/install-offline-data.sh" in message
