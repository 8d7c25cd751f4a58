"""The suite kit (``fusionbench_core.suitekit``): seeded splits, digests, the task catalog and cache, the expert store, the builder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fusionbench_core.suitekit import splits


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
    from fusionbench_core.suitekit import store as es

    store = es.SuiteStore(tmp_path / "suite")
    assert store.head_path("a") == tmp_path / "suite" / "heads" / "a.safetensors"
    assert store.expert_dir(2, "a") == tmp_path / "suite" / "seed2" / "a"
    assert not store.is_built(0, ["a"])

    class Config:
        def to_dict(self):
            return {"hidden_size": 4, "transformers_version": "9.9"}

    from fusionbench_core.suitekit.heads import CosineHead

    head = CosineHead(torch.zeros(4), torch.eye(3, 4), 16.0)
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    es.write_model_dir(store.pretrained_dir, Config(), state, extra={"seconds": 1})
    es.save_head(store.head_path("a"), head)
    assert not store.is_built(0, ["a"])
    es.write_model_dir(store.expert_dir(0, "a"), Config(), state, head=es.head_state(head))
    assert store.is_built(0, ["a"]) and not store.is_built(1, ["a"])
    config = json.loads((store.pretrained_dir / es.CONFIG_FILE).read_text())
    assert config == {"hidden_size": 4}  # the transformers version never reaches the bytes
    loaded = es.load_head(store.head_path("a"))
    assert torch.equal(loaded.class_vectors, torch.eye(3, 4)) and float(loaded.scale) == 16.0
    assert not [p for p in store.root.rglob(".*")], "temporary files left behind"
    store.clear(0)
    assert not store.pretrained_dir.exists() and not store.expert_dir(0, "a").exists()


def test_warmup_cosine_and_task_seed():
    pytest.importorskip("torch")
    from fusionbench_core.suitekit import training as es

    factor = es.warmup_cosine(20)  # 2 warm-up steps
    assert factor(0) == pytest.approx(0.5) and factor(1) == pytest.approx(1.0)
    assert factor(2) == pytest.approx(1.0) and factor(11) == pytest.approx(0.5) and factor(20) == pytest.approx(0.0)
    assert es.task_seed(0, "a") == int.from_bytes(hashlib.sha256(b"0/a").digest()[:4], "little")
    assert es.task_seed(0, "a") != es.task_seed(1, "a")


def test_cosine_head_is_centred_prototypes_at_a_fixed_scale():
    """A hand-computed case: the CL2N prototypes, the logits, and what the head is blind to."""
    torch = pytest.importorskip("torch")
    from fusionbench_core.suitekit.heads import cosine_head

    # Two classes in 2-D; features already unit norm: class 0 at 0 and 90 degrees, class 1 at 180.
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = [0, 0, 1]
    head = cosine_head(feats, labels, 2, scale=10.0)
    # Class means (0.5, 0.5) and (-1, 0); centre = their mean (-0.25, 0.25), class-balanced.
    assert torch.allclose(head.centre, torch.tensor([-0.25, 0.25]))
    # Centred, normalised features: (1.25, -0.25)/|.|, (0.25, 0.75)/|.|, (-0.75, -0.25)/|.|;
    # the class-0 vector is the normalised mean of the first two, class 1 the third.
    u = [torch.tensor(v) / torch.tensor(v).norm() for v in ([1.25, -0.25], [0.25, 0.75], [-0.75, -0.25])]
    v0 = (u[0] + u[1]) / 2
    v0 = v0 / v0.norm()
    assert torch.allclose(head.class_vectors, torch.stack([v0, u[2]]), atol=1e-6)
    x = torch.tensor([[3.0, 4.0]])  # norm 5: the head normalises before centring
    unit = torch.tensor([0.6, 0.8]) - torch.tensor([-0.25, 0.25])
    unit = unit / unit.norm()
    expected = 10.0 * torch.stack([unit @ v0, unit @ u[2]])
    assert torch.allclose(head(x)[0], expected, atol=1e-5)
    # No bias, and a backbone cannot buy confidence by inflating its features.
    assert torch.allclose(head(100 * x), head(x), atol=1e-5)
    assert not any(p.requires_grad for p in head.parameters()) and list(head.parameters()) == []


def test_cosine_head_needs_every_class_and_round_trips_bit_for_bit(tmp_path):
    torch = pytest.importorskip("torch")
    from fusionbench_core.errors import ConfigError, ModelLoadError
    from fusionbench_core.suitekit import store as es
    from fusionbench_core.suitekit.heads import cosine_head

    gen = torch.Generator().manual_seed(0)
    head = cosine_head(torch.randn(12, 5, generator=gen), [0, 1, 2] * 4, 3, scale=16.0)
    es.save_head(tmp_path / "h.safetensors", head)
    loaded = es.load_head(tmp_path / "h.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), loaded.state_dict().values()))
    es.save_head(tmp_path / "again.safetensors", loaded)
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "h.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="class 2 of 3 has none"):
        cosine_head(torch.randn(4, 5, generator=gen), [0, 1, 0, 1], 3, scale=16.0)
    # A head of the previous design (a linear probe) is refused in one line, not half-used.
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, str(tmp_path / "old.safetensors"))
    with pytest.raises(ModelLoadError, match="old.safetensors is not a cosine head"):
        es.load_head(tmp_path / "old.safetensors")


def test_shot_indices_take_the_first_examples_of_each_class():
    pytest.importorskip("torch")
    from fusionbench_core.suitekit.builder import shot_indices

    shots, rest = shot_indices([2, 0, 0, 1, 0, 2, 1, 1], 2, 3)
    assert shots.tolist() == [0, 1, 2, 3, 5, 6] and rest.tolist() == [4, 7]


def _counting_builder(torch, tmp_path):
    """A :class:`SuiteBuilder` whose hooks write fake models and count their calls."""
    from fusionbench_core.suitekit import store as es
    from fusionbench_core.suitekit.builder import SuiteBuilder

    class Config:
        def to_dict(self):
            return {}

    class Profile:
        name, tasks = "full", ("a", "b")

        def fingerprint(self):
            return "f" * 10

    class CountingBuilder(SuiteBuilder):
        suite = "toy"
        default_profiles = {"full": Profile(), "quick": Profile()}

        def __init__(self):
            super().__init__()
            self.calls = {"pretrained": 0, "heads": [], "experts": []}

        def write_pretrained(self, profile, directory, device):
            self.calls["pretrained"] += 1
            es.write_model_dir(directory, Config(), {"w": torch.zeros(2)})
            return "built"

        def load_backbone(self, directory):
            return torch.nn.Linear(2, 2)

        def make_head(self, profile, pretrained, task):
            self.calls["heads"].append(task)
            from fusionbench_core.suitekit.heads import CosineHead

            return CosineHead(torch.zeros(2), torch.eye(2), 1.0)

        def build_expert(self, profile, seed, task, pretrained, head, directory, device, label):
            self.calls["experts"].append(label)
            info = {"validation_accuracy": 0.75, "pretrained_validation_accuracy": 0.5}
            es.write_model_dir(directory, Config(), {"w": torch.ones(2)}, head=es.head_state(head), extra=info)
            return info

    return CountingBuilder()


def test_suite_builder_resumes_and_counts(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FUSIONBENCH_PROGRESS", "0")
    builder = _counting_builder(torch, tmp_path)
    calls = builder.calls
    profile = builder.profile_for(False)
    assert builder.suite_dir(profile) == tmp_path / "cache" / "suites" / "toy" / "full-ffffffffff"
    first = builder.build(profile, stop_after=1)
    assert first["stopped"] == "after 1 experts" and first["experts"] == "1 trained, 0 cached"
    assert first["pretrained"] == "built" and calls["experts"] == ["a (1/2)"] and calls["heads"] == ["a", "b"]
    second = builder.build(profile)
    assert second["pretrained"] == "cached" and second["experts"] == "1 trained, 1 cached"
    assert second["expert a"] == "val acc 0.500 -> 0.750" and calls["experts"] == ["a (1/2)", "b (2/2)"]
    assert builder.is_built(profile, 0) and calls["pretrained"] == 1 and calls["heads"] == ["a", "b"]
    builder.build(profile, force=True)
    assert calls["pretrained"] == 2 and len(calls["experts"]) == 4


def test_suite_builder_memoises_task_arrays_per_builder():
    pytest.importorskip("torch")
    from fusionbench_core.suitekit.builder import SuiteBuilder

    class Arrays(list):
        labels, classes = (), 2

        def head(self, limit):
            return self if limit is None else Arrays(self[:limit])

    reads = []

    def source(task, split):
        reads.append((task, split))
        return Arrays(range(5))

    class Toy(SuiteBuilder):
        suite = "toy"

    builder = Toy(profiles={"full": None}, data_source=source)
    assert builder.task_arrays(None, "a", "train", 3) == [0, 1, 2]
    assert builder.task_arrays(None, "a", "train") == [0, 1, 2, 3, 4]
    assert reads == [("a", "train")]
    Toy(profiles={"full": None}, data_source=source).task_arrays(None, "a", "train")
    assert reads == [("a", "train")] * 2  # another builder, its own memo


def test_task_catalog_checks_sources_and_names_cache_dirs(tmp_path, monkeypatch):
    from fusionbench_core.suitekit.catalog import MissingSourceError, TaskCatalog, TaskSpec

    present = tmp_path / "present"
    present.write_text("1")
    ok = splits.PackagedSource("pkg ok", lambda: present)
    gone = splits.PackagedSource("pkg gone", lambda: tmp_path / "absent")

    def probe():
        raise MissingSourceError("toy task 'c' needs more")

    catalog = TaskCatalog("toy", [TaskSpec("a", lambda **kw: None, 2, "first", (3, 2, 1), (ok,)),
                                  TaskSpec("b", lambda **kw: None, 2, "second", (3, 2, 1), (ok, gone)),
                                  TaskSpec("c", lambda **kw: None, 2, "third", (3, 2, 1), probe=probe)],
                          version="v7", digest=lambda dsd: "")
    assert list(catalog) == ["a", "b", "c"] and catalog["b"].description == "second"
    assert catalog.sources_available("a") and not catalog.sources_available()
    assert catalog.missing_sources() == [
        f"toy task 'b' needs the pkg gone (missing {tmp_path / 'absent'}); run scripts/install-offline-data.sh",
        "toy task 'c' needs more",
    ]
    with pytest.raises(KeyError, match="unknown toy task 'z'; known: a, b, c"):
        catalog.load_task("z")
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    assert catalog.task_cache_dir("a") == tmp_path / "cache" / "datasets" / "toy" / "a-v7"
    assert catalog.task_cache_dir("a", seed=1, sizes=(1, 1, 1)).name == "a-v7-seed1-n1-1-1"


def test_modules_import_no_suite_or_hub_library():
    import subprocess
    import sys

    code = ("import sys, fusionbench_core.suitekit.splits, fusionbench_core.suitekit.catalog; "
            "assert not {'torch', 'datasets', 'transformers'} & set(sys.modules), 'splits imported a heavy module'; "
            "import fusionbench_core.suitekit.builder, fusionbench_core.suitekit.pools; "
            "assert not {'datasets', 'transformers', 'peft'} & set(sys.modules); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-1000:]


def test_fine_tuned_parameters_leave_the_profiles_frozen_prefixes_out():
    """Prefixes match whole name components: ``emb`` freezes ``emb.weight`` but neither ``embx`` nor ``a.emb``."""
    torch = pytest.importorskip("torch")
    from dataclasses import dataclass

    from fusionbench_core.suitekit.builder import SuiteBuilder

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Linear(2, 2)
            self.embx = torch.nn.Linear(2, 2)
            self.a = torch.nn.Module()
            self.a.emb = torch.nn.Linear(2, 2)

    @dataclass(frozen=True)
    class Frozen:
        frozen: tuple = ("emb",)

    @dataclass(frozen=True)
    class Everything:
        name: str = "x"

    net = Net()
    trained = SuiteBuilder.fine_tuned_parameters(None, Frozen(), net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in trained) == ["a.emb.bias", "a.emb.weight", "embx.bias", "embx.weight"]
    assert not net.emb.weight.requires_grad and net.embx.weight.requires_grad
    assert len(SuiteBuilder.fine_tuned_parameters(None, Everything(), Net())) == 6
