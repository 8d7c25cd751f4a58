"""The modality-free machinery of the offline suites: seeded splits, digests, the task cache, the expert store."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from fusionbench_core import splits


# --------------------------------------------------------------------------- splits


def test_seeded_rng_depends_on_seed_and_salt_only():
    draw = lambda seed, salt: splits.seeded_rng(seed, salt).random(4).tolist()  # noqa: E731
    assert draw(0, "mnist") == draw(0, "mnist")
    assert draw(0, "mnist") != draw(0, "digits") and draw(0, "mnist") != draw(1, "mnist")


def test_stratified_order_prefixes_keep_class_shares():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    order = splits.stratified_order(labels, splits.seeded_rng(3, "t"))
    assert sorted(order.tolist()) == list(range(100))
    for n in (10, 20, 50):
        counts = np.bincount(labels[order[:n]], minlength=3)
        expected = np.array([0.6, 0.3, 0.1]) * n
        assert np.all(np.abs(counts - expected) <= 1), (n, counts)


def test_fit_sizes_shrinks_train_first_then_validation():
    assert splits.fit_sizes((10, 5, 5), 100) == (10, 5, 5)
    assert splits.fit_sizes((10, 5, 5), 15) == (5, 5, 5)
    assert splits.fit_sizes((0, 5, 5), 7) == (0, 5, 2)
    with pytest.raises(ValueError, match="only 10 examples"):
        splits.fit_sizes((10, 5, 5), 10)


def test_balanced_subset_water_fills_to_the_total():
    labels = np.repeat([0, 1, 2], [50, 20, 3])
    keep = splits.balanced_subset(labels, 30, splits.seeded_rng(0, "b"))
    # cap 14: min(50,14) + min(20,14) + 3 = 31 >= 30, while cap 13 gives 29
    assert np.bincount(labels[keep]).tolist() == [14, 14, 3]
    assert keep.tolist() == sorted(keep.tolist())
    assert splits.balanced_subset(labels, 100, splits.seeded_rng(0, "b")).tolist() == list(range(73))


def test_stratified_split_is_disjoint_seeded_and_balanced():
    labels = np.repeat([0, 1], [80, 20])
    tr, va, te = splits.stratified_split(labels, (50, 20, 20), splits.seeded_rng(0, "s"))
    assert (len(tr), len(va), len(te)) == (50, 20, 20)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert abs(int(np.bincount(labels[va])[1]) - 4) <= 2  # about the 20 % share in every slice
    again = splits.stratified_split(labels, (50, 20, 20), splits.seeded_rng(0, "s"))
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    btr, bva, bte = splits.stratified_split(labels, (10, 10, 10), splits.seeded_rng(0, "s"), balance=True)
    assert np.bincount(labels[np.concatenate([btr, bva, bte])]).tolist() == [15, 15]


def test_content_digest_is_sha256_of_the_parts():
    images = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    header = splits.split_header("test", 2, ("a", "b"))
    assert header == "test:2:['a', 'b']"
    expected = hashlib.sha256(header.encode() + images.tobytes() + b"x\0y").hexdigest()
    assert splits.content_digest([header, images, "x\0y"]) == expected
    # Arrays hash as C-order bytes, whatever their memory layout.
    assert splits.content_digest([np.asfortranarray(images)]) == splits.content_digest([images])
    assert splits.content_digest([images[:1]]) != splits.content_digest([images])


def test_packaged_source_reports_what_is_missing(tmp_path):
    present = tmp_path / "x"
    present.write_text("1")
    assert splits.PackagedSource("pkg", lambda: present).missing() is None
    assert splits.PackagedSource("pkg", lambda: tmp_path / "y").missing() == tmp_path / "y"
    assert splits.PackagedSource("pkg", lambda: None).missing() == "pkg"
    assert splits.installed_file("no-such-distribution-xyz", "a.txt") is None
    assert splits.installed_file("pytest", "pytest/__init__.py").exists()


def test_task_cache_leaf_names_non_default_settings():
    kw = {"default_sizes": (3, 2, 1)}
    assert splits.task_cache_leaf("mnist", "v1", seed=0, sizes=(3, 2, 1), **kw) == "mnist-v1"
    assert splits.task_cache_leaf("mnist", "v1", seed=2, sizes=(3, 2, 1), **kw) == "mnist-v1-seed2"
    assert splits.task_cache_leaf("mnist", "v1", seed=2, sizes=(9, 2, 1), **kw) == "mnist-v1-seed2-n9-2-1"


def test_load_or_build_builds_once_and_rebuilds_on_new_settings(tmp_path):
    path = tmp_path / "cache" / "task-v1"
    builds = []

    def build():
        builds.append(1)
        return {"train": [1, 2, 3], "test": [4]}

    def save(data, directory):
        (directory / "data.json").write_text(json.dumps(data))

    def load(directory):
        return json.loads((directory / "data.json").read_text())

    kw = {"save": save, "load": load, "digest": lambda d: "d" * 4, "split_sizes": lambda d: {k: len(v) for k, v in d.items()}}
    meta = {"task": "t", "seed": 0}
    assert splits.load_or_build(path, meta, build, **kw) == {"train": [1, 2, 3], "test": [4]}
    stored = json.loads((path / splits.META_FILE).read_text())
    assert stored == {"task": "t", "seed": 0, "digest": "dddd", "split_sizes": {"train": 3, "test": 1}}
    assert splits.load_or_build(path, meta, build, **kw) == {"train": [1, 2, 3], "test": [4]}
    assert len(builds) == 1  # the second call reused the cached copy
    splits.load_or_build(path, {"task": "t", "seed": 1}, build, **kw)
    splits.load_or_build(path, {"task": "t", "seed": 1}, build, refresh=True, **kw)
    assert len(builds) == 3
    assert [p.name for p in path.parent.iterdir()] == ["task-v1"]  # no temporary or old copies left

    def broken(_data, _directory):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        splits.load_or_build(tmp_path / "cache" / "other", meta, build, **{**kw, "save": broken})
    assert [p.name for p in path.parent.iterdir()] == ["task-v1"]


# --------------------------------------------------------------------------- the expert store


def test_suite_store_layout_is_built_and_clear(tmp_path):
    torch = pytest.importorskip("torch")
    from fusionbench_core.engine import expert_suite as es

    store = es.SuiteStore(tmp_path / "suite")
    assert store.head_path("a") == tmp_path / "suite" / "heads" / "a.safetensors"
    assert store.expert_dir(2, "a") == tmp_path / "suite" / "seed2" / "a"
    assert not store.is_built(0, ["a"])

    class Config:
        def to_dict(self):
            return {"hidden_size": 4, "transformers_version": "9.9"}

    head = es.new_head(4, 3)
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    es.write_model_dir(store.pretrained_dir, Config(), state, extra={"seconds": 1})
    es.save_head(store.head_path("a"), head)
    assert not store.is_built(0, ["a"])
    es.write_model_dir(store.expert_dir(0, "a"), Config(), state, head=es.head_state(head))
    assert store.is_built(0, ["a"]) and not store.is_built(1, ["a"])
    config = json.loads((store.pretrained_dir / es.CONFIG_FILE).read_text())
    assert config == {"hidden_size": 4}  # the transformers version never reaches the bytes
    loaded = es.load_head(store.head_path("a"))
    assert not loaded.weight.requires_grad and torch.equal(loaded.weight, torch.zeros(3, 4))
    assert not [p for p in store.root.rglob(".*")], "temporary files left behind"
    store.clear(0)
    assert not store.pretrained_dir.exists() and not store.expert_dir(0, "a").exists()


def test_warmup_cosine_and_task_seed():
    pytest.importorskip("torch")
    from fusionbench_core.engine import expert_suite as es

    factor = es.warmup_cosine(20)  # 2 warm-up steps
    assert factor(0) == pytest.approx(0.5) and factor(1) == pytest.approx(1.0)
    assert factor(2) == pytest.approx(1.0) and factor(11) == pytest.approx(0.5) and factor(20) == pytest.approx(0.0)
    assert es.task_seed(0, "a") == int.from_bytes(hashlib.sha256(b"0/a").digest()[:4], "little")
    assert es.task_seed(0, "a") != es.task_seed(1, "a")


def test_build_expert_suite_resumes_and_counts(tmp_path):
    torch = pytest.importorskip("torch")
    from fusionbench_core.engine import expert_suite as es

    os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")
    store = es.SuiteStore(tmp_path / "s")
    calls = {"pretrained": 0, "heads": [], "experts": []}

    class Config:
        def to_dict(self):
            return {}

    def write_pretrained():
        calls["pretrained"] += 1
        es.write_model_dir(store.pretrained_dir, Config(), {"w": torch.zeros(2)})
        return "built"

    def train_expert(pretrained, head, task, label):
        calls["experts"].append(label)
        info = {"validation_accuracy": 0.75, "pretrained_validation_accuracy": 0.5}
        es.write_model_dir(store.expert_dir(0, task), Config(), {"w": torch.ones(2)}, head=es.head_state(head),
                           extra=info)
        return info

    def fit_task_head(pretrained, task):
        calls["heads"].append(task)
        return es.new_head(2, 2)

    kw = dict(suite="toy", variant="full", tasks=["a", "b"], seed=0, dev=torch.device("cpu"),
              write_pretrained=write_pretrained, load_pretrained=lambda: torch.nn.Linear(2, 2),
              fit_task_head=fit_task_head, train_expert=train_expert)
    first = es.build_expert_suite(store, stop_after=1, **kw)
    assert first["stopped"] == "after 1 experts" and first["experts"] == "1 trained, 0 cached"
    assert first["pretrained"] == "built" and calls["experts"] == ["a (1/2)"] and calls["heads"] == ["a", "b"]
    second = es.build_expert_suite(store, **kw)
    assert second["pretrained"] == "cached" and second["experts"] == "1 trained, 1 cached"
    assert second["expert a"] == "val acc 0.500 -> 0.750" and calls["experts"] == ["a (1/2)", "b (2/2)"]
    assert store.is_built(0, ["a", "b"]) and calls["pretrained"] == 1 and calls["heads"] == ["a", "b"]
    es.build_expert_suite(store, force=True, **kw)
    assert calls["pretrained"] == 2 and len(calls["experts"]) == 4


def test_modules_import_no_suite_or_hub_library():
    import subprocess
    import sys

    code = ("import sys, fusionbench_core.splits; "
            "assert not {'torch', 'datasets', 'transformers'} & set(sys.modules), 'splits imported a heavy module'; "
            "import fusionbench_core.engine.expert_suite; "
            "assert not {'datasets', 'transformers', 'peft'} & set(sys.modules); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-1000:]
