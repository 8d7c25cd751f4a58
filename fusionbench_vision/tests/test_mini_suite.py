"""The mini-vision suite on tiny synthetic stand-in data: build, frozen heads, determinism, resume, pools, CLI.

Every test here builds with a :class:`MiniVisionBuilder` given small synthetic images and tiny
variants (a 1-layer encoder of width 16) in its constructor, with the cache in ``tmp_path``; the
pools ``fb`` makes by name are pointed at that builder (``suitekit.testing.use_builder``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fusionbench_core.protocols import PRETRAINED, DataModelPool, DataRequest, ModelPool, TaskPool  # noqa: E402
from fusionbench_core.suitekit.testing import safetensors_bytes, suite_cache, use_builder  # noqa: E402, F401
from fusionbench_vision.mini import build as mb  # noqa: E402
from fusionbench_vision.mini import model as mm  # noqa: E402
from fusionbench_vision.mini.pool import MiniVisionModelPool, MiniVisionTaskPool  # noqa: E402

TASKS = ("mnist", "digits")
SIZES = {"train": 48, "validation": 24, "test": 24}


def synthetic_arrays(task: str, split: str) -> mb.TaskArrays:
    """Three noisy classes per task: by overall brightness (the pretraining task) or by bright region."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{split}".encode()))
    n = SIZES[split]
    labels = (np.arange(n) % 3).astype(np.int64)
    images = rng.integers(0, 120, (n, 32, 32, 3))
    if task == "fashion_mnist":
        images += labels[:, None, None, None] * 60
    else:  # the expert tasks need a cue the pretraining did not teach: where the bright patch is
        for i, label in enumerate(labels):
            rows, cols = [(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 32))][label]
            images[i, rows, cols] += 100
        if task == "digits":
            images = images[:, ::-1]
    return mb.TaskArrays(np.ascontiguousarray(images, dtype=np.uint8), labels, 3)


def tiny_profile(name: str) -> mb.Profile:
    return mb.Profile(name, tasks=TASKS, width=16, layers=1, heads=2, mlp=32, patch=8, pretrain_examples=48,
                      pretrain_batch=16, train_examples=48, epochs=8, batch=16, lr=1e-3, eval_examples=None,
                      head_shots=4)


def tiny_builder() -> mb.MiniVisionBuilder:
    """A builder of the tiny variants on the synthetic images."""
    return mb.MiniVisionBuilder(profiles={"full": tiny_profile("full"), "quick": tiny_profile("quick")},
                                data_source=synthetic_arrays)


@pytest.fixture
def tiny(monkeypatch, suite_cache):
    """The tiny builder, also used by the pools ``fb`` makes; the cache is under ``tmp_path`` (see ``suite_cache``)."""
    torch.set_num_threads(1)
    builder = tiny_builder()
    use_builder(monkeypatch, builder, MiniVisionModelPool, MiniVisionTaskPool)
    return builder


def test_build_freezes_heads_and_trains_encoders(tiny):
    profile = tiny.profile_for(False)
    summary = tiny.build(profile, seed=0)
    assert summary["experts"] == "2 trained, 0 cached"
    store = tiny.store(profile)
    root = tiny.suite_dir(profile)
    pretrained = mm.load_encoder(root / "pretrained")
    from safetensors.torch import load_file

    base = load_file(str(root / "pretrained" / mm.MODEL_FILE))
    assert "encoder.layers.0.self_attn.q_proj.weight" in base and not any(k.endswith("position_ids") for k in base)
    assert type(pretrained).__name__ == "CLIPVisionModel"
    for task in TASKS:
        expert_dir = store.expert_dir(0, task)
        # The head the expert was trained under is bit-identical to the one derived from the pretrained encoder.
        assert (expert_dir / mm.HEAD_FILE).read_bytes() == store.head_path(task).read_bytes()
        expert = load_file(str(expert_dir / mm.MODEL_FILE))
        assert expert.keys() == base.keys()
        moved = sum(float((expert[k] - base[k]).abs().sum()) for k in base)
        assert moved > 0, f"{task}: fine-tuning left the encoder unchanged"
        # The profile's frozen prefixes (the embeddings) stay bit-identical: a zero task vector there.
        frozen = [k for k in base if k.split(".")[0] in profile.frozen]
        assert frozen and all(torch.equal(expert[k], base[k]) for k in frozen)
        assert all(not torch.equal(expert[k], base[k]) for k in base if k.startswith("encoder.layers.0.mlp."))
        # Fine-tuning under the frozen head lowered the training loss below the pretrained encoder's.
        head = mm.load_head(store.head_path(task))
        train = synthetic_arrays(task, "train")
        tuned = mm.load_encoder(expert_dir)
        assert tiny.evaluate(tuned, head, train)["loss"] < tiny.evaluate(pretrained, head, train)["loss"]
        # The head's 4 shots per class (3 classes) are held out of fine-tuning.
        assert json.loads((expert_dir / "info.json").read_text())["train_examples"] == SIZES["train"] - 4 * 3
    # The prototype head made from pretrained features is far above chance (1/3) on its training data.
    head = mm.load_head(store.head_path("mnist"))
    assert tiny.evaluate(pretrained, head, synthetic_arrays("mnist", "train"))["accuracy"] > 0.7


def test_two_builds_give_identical_bytes_and_resume_matches(tiny, suite_cache, tmp_path):
    profile = tiny.profile_for(False)
    suite_cache(tmp_path / "a")
    tiny.build(profile, seed=1)
    first = safetensors_bytes(tiny.suite_dir(profile))
    suite_cache(tmp_path / "b")
    tiny_builder().build(profile, seed=1)  # a fresh builder: nothing memoised
    assert safetensors_bytes(tiny.suite_dir(profile)) == first
    suite_cache(tmp_path / "c")
    store = tiny.store(profile)
    partial = tiny.build(profile, seed=1, stop_after=1)
    assert partial["stopped"] == "after 1 experts"
    assert (store.expert_dir(1, TASKS[0]) / mm.MODEL_FILE).exists()
    assert not store.expert_dir(1, TASKS[1]).exists()
    assert not tiny.is_built(profile, 1)
    resumed = tiny.build(profile, seed=1)
    assert resumed["experts"] == "1 trained, 1 cached"
    assert safetensors_bytes(tiny.suite_dir(profile)) == first
    assert len(first) == 1 + len(TASKS) + 2 * len(TASKS)  # pretrained, heads, expert model + head


def test_other_seed_gives_other_experts_same_pretrained(tiny):
    profile = tiny.profile_for(False)
    tiny.build(profile, seed=0)
    tiny.build(profile, seed=1)
    store = tiny.store(profile)
    a = (store.expert_dir(0, "mnist") / mm.MODEL_FILE).read_bytes()
    b = (store.expert_dir(1, "mnist") / mm.MODEL_FILE).read_bytes()
    assert a != b
    assert not list(tiny.suite_dir(profile).glob("**/.*tmp*")), "temporary files left behind"
    # `fb suites show` says what is built, and names a build of an earlier design without using it.
    old = tiny.suite_dir(profile).parent / "full-0123456789"
    (old / "heads").mkdir(parents=True)
    described = MiniVisionModelPool.describe_suite()
    assert described["built"] == {"full": "seeds 0, 1", "quick": "not built"}
    assert described["other builds (not used)"] == ["full-0123456789"]
    assert described["variants"]["full"] == profile.fingerprint() != "0123456789"


def test_the_fingerprint_names_the_design():
    """A build of an earlier design (1: linear-probe heads; 2: whole-encoder experts) is never mistaken for this one."""
    import dataclasses

    from fusionbench_core.suitekit.builder import settings_fingerprint

    profile = mb.PROFILES["full"]
    assert profile.fingerprint() == settings_fingerprint(mb.CODE_VERSION, profile)
    assert mb.CODE_VERSION == 3
    assert profile.fingerprint() not in {settings_fingerprint(1, profile), settings_fingerprint(2, profile)}
    assert dataclasses.replace(profile, head_scale=100.0).fingerprint() != profile.fingerprint()
    assert dataclasses.replace(profile, frozen=()).fingerprint() != profile.fingerprint()


def test_pools_follow_the_protocols(tiny):
    pool = MiniVisionModelPool(seed=0)  # builds the tiny variant on first use
    tasks = MiniVisionTaskPool()
    assert isinstance(pool, ModelPool) and isinstance(pool, DataModelPool) and isinstance(tasks, TaskPool)
    assert pool.model_names == list(TASKS) and pool.has_pretrained and tasks.task_names == list(TASKS)
    source = pool.tensors("mnist")
    state = {key: source.get(key) for key in source.keys()}
    rebuilt = pool.build_model(state)
    loaded = pool.load_model("mnist")
    assert tasks.evaluate(rebuilt).tasks == tasks.evaluate(loaded).tasks
    report = tasks.evaluate(pool.load_model(PRETRAINED))
    for task in TASKS:
        assert set(report.tasks[task]) == {"accuracy", "loss"}
        assert 0.0 <= report.tasks[task]["accuracy"] <= 1.0
    batches = list(pool.batches("digits", DataRequest("train", examples=20, labelled=False), batch_size=8))
    assert [x.shape[0] for x, _ in batches] == [8, 8, 4] and all(y is None for _, y in batches)
    x, y = next(pool.batches("digits", DataRequest("test", examples=None), batch_size=100))
    assert x.shape == (SIZES["test"], 3, 32, 32) and y.shape == (SIZES["test"],)
    logits = pool.logits("digits", loaded, x)
    head = pool.head("digits")
    expected = head(loaded(pixel_values=x).pooler_output)
    torch.testing.assert_close(logits, expected)
    # Accuracy from the pool's logits equals the task pool's test accuracy of the same model.
    acc = float((logits.argmax(1) == y).double().mean())
    assert acc == pytest.approx(tasks.evaluate(loaded).tasks["digits"]["accuracy"])
    from fusionbench_core.errors import FusionBenchError

    with pytest.raises(FusionBenchError, match="letters"):
        pool.load_model("letters")
    # The validation split, for choosing hyperparameters (fb sweep --select-on validation).
    from fusionbench_core.protocols import Fingerprinted, ScoresSplits

    assert isinstance(tasks, ScoresSplits) and isinstance(tasks, Fingerprinted) and isinstance(pool, Fingerprinted)
    on_validation = tasks.evaluate_split(loaded, "validation").tasks["digits"]["accuracy"]
    val = tiny.task_arrays(pool.profile, "digits", "validation")
    by_hand = float((head(loaded(pixel_values=next(tiny.batches(val, 100))[0]).pooler_output).argmax(1)
                     == torch.from_numpy(val.labels)).double().mean())
    assert on_validation == pytest.approx(by_hand)
    assert MiniVisionTaskPool(split="validation").evaluate(loaded).tasks["digits"]["accuracy"] == on_validation
    assert tasks.fingerprint() != MiniVisionTaskPool(split="validation").fingerprint()
    assert pool.fingerprint() != MiniVisionModelPool(seed=1).fingerprint()
    with pytest.raises(FusionBenchError, match="split must be one of test, validation"):
        tasks.evaluate_split(loaded, "train")
    with pytest.raises(FusionBenchError, match="tensor 'post_layernorm.bias'"):
        pool.build_model({k: v for k, v in state.items() if k != "post_layernorm.bias"})
    prefixed = pool.build_model({"vision_model." + k: v for k, v in state.items()})  # hub CLIP naming
    assert all(torch.equal(a, b) for a, b in zip(prefixed.state_dict().values(), rebuilt.state_dict().values()))


def test_save_model_roundtrip(tiny, tmp_path):
    pool = MiniVisionModelPool()
    model = pool.load_model("digits")
    pool.save_model(model, tmp_path / "saved")
    from fusionbench_core.engine.sources import open_source

    source = open_source(tmp_path / "saved")
    again = pool.build_model({k: source.get(k) for k in source.keys()})
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_fb_run_without_arguments_builds_and_prints_the_table(tiny, fb_cli, tmp_path):
    result = fb_cli("run", "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    assert "task_arithmetic" in result.stdout and "mini-vision" in result.stdout
    for task in TASKS:
        assert task in result.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["modelpool"]["name"] == "mini-vision" and set(report["tasks"]) == set(TASKS)


def test_fb_run_json_and_quick_option_reaches_the_taskpool(tiny, fb_cli, tmp_path):
    result = fb_cli("run", "-p", "mini-vision", "-m", "simple_average", "-s", "modelpool.quick=true",
                    "-o", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert set(report["tasks"]) == set(TASKS)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in report["tasks"].values())
    assert tiny.is_built(tiny.profile_for(True), 0)
    assert not tiny.suite_dir(tiny.profile_for(False)).exists(), "the full variant was built for a quick run"


def test_an_ensemble_of_quick_experts_is_scored_with_the_quick_heads(tiny):
    """The task pool takes the variant from the model pool it is bound to, not from a tag on the model."""
    from fusionbench_data_methods.ensemble_model import EnsembleModel

    pool = MiniVisionModelPool(quick=True)
    tasks = MiniVisionTaskPool()
    tasks.bind(pool)
    members = [pool.load_model(task) for task in TASKS]
    report = tasks.evaluate(EnsembleModel(members))
    assert not tiny.suite_dir(tiny.profile_for(False)).exists(), "scored with (or built) the full variant"
    quick = tiny.profile_for(True)
    for task in TASKS:  # the mean of the members' logits under the quick variant's head, by hand
        head = tiny.load_head(tiny.store(quick).head_path(task))
        test = tiny.task_arrays(quick, task, "test")
        x = mm.pixel_values(test.images)
        with torch.no_grad():
            logits = torch.stack([head(mm.features(m, x)) for m in members]).mean(dim=0)
        expected = float((logits.argmax(1) == torch.from_numpy(test.labels)).double().mean())
        assert report.tasks[task]["accuracy"] == pytest.approx(expected)
    # A model pool of another suite leaves the task pool's own default (the full variant).
    other = MiniVisionTaskPool()
    other.bind(object())
    assert other.variant()[1] is tiny.profile_for(False)


def test_fb_suites_build_cli_and_bad_option(tiny, fb_cli):
    result = fb_cli("suites", "build", "mini-vision", "--quick", "--seed", "2")
    assert result.exit_code == 0, result.stderr
    assert tiny.is_built(tiny.profile_for(True), 2)
    again = fb_cli("suites", "build", "mini-vision", "--quick", "--seed", "2")
    assert "0 trained, 2 cached" in again.stdout
    bad = fb_cli("run", "-p", "mini-vision", "-s", "modelpool.qiuck=true")
    assert bad.exit_code != 0 and "qiuck" in bad.stderr


def test_fb_suites_show_says_what_is_built_and_lists_older_designs(tiny, fb_cli):
    tiny.build(tiny.profile_for(True), seed=1)
    older = tiny.suite_dir(tiny.profile_for(False)).parent / "full-0123456789"  # an earlier design's build
    older.mkdir(parents=True)
    result = fb_cli("suites", "show", "mini-vision", "--json")
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["built"] == {"full": "not built", "quick": "seeds 1"}
    assert details["variants"]["quick"] == tiny.profile_for(True).fingerprint()
    assert details["other builds (not used)"] == ["full-0123456789"]
    assert "options" not in details
    table = fb_cli("suites", "show", "mini-vision")
    assert table.exit_code == 0 and "full-0123456789" in table.stdout
    bad = fb_cli("suites", "show", "mini-visio")
    assert bad.exit_code != 0 and "Did you mean: mini-vision" in bad.stderr


def test_plugin_module_does_not_import_torch():
    code = ("import sys, fusionbench_vision.mini.plugin as p; "
            "assert not {'torch', 'transformers', 'datasets'} & set(sys.modules), sorted(sys.modules); print(p.TASKS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "mnist" in out.stdout
    assert tuple(json.loads(out.stdout.strip().replace("'", '"'))) == mb.EXPERT_TASKS


_OFFLINE_RUN = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
import test_mini_suite as t
from fusionbench_vision.mini.pool import MiniVisionModelPool, MiniVisionTaskPool
MiniVisionModelPool.builder = MiniVisionTaskPool.builder = t.tiny_builder()
from fusionbench_core.cli import cli
cli(["run", "-p", "mini-vision", "-s", "modelpool.quick=true", "--json", "-o", {out!r}], prog_name="fb")
"""


def test_fb_run_works_without_a_network(tmp_path):
    """``fb run -p mini-vision -s modelpool.quick=true`` inside ``unshare -n`` (a namespace with no network)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not permitted here")
    env = {**os.environ, "FUSIONBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "FUSIONBENCH_PROGRESS": "0"}
    env.pop("HF_HUB_OFFLINE", None)  # the namespace, not the variable, must keep it offline
    code = _OFFLINE_RUN.format(tests=str(Path(__file__).parent), out=str(tmp_path / "run"))
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report["tasks"]) == set(TASKS) and report["method"] == "task_arithmetic"


# --------------------------------------------------------------------------- real data (opt-in)


def _real_sources() -> bool:
    from fusionbench_vision.mini import data

    return data.sources_available()


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_variant_on_real_data_experts_beat_pretrained(configured_cache):
    """The real ``--quick`` suite (built if missing, about 2 minutes): every expert beats the linear probe on its task."""
    if not _real_sources():
        pytest.skip("offline data sources are not installed (scripts/install-offline-data.sh)")
    # The configured cache on purpose: CI builds the quick suite there first (`make test`), so this
    # checks the very models `fb run` uses, and costs a build only where none exists yet.
    torch.set_num_threads(1)
    pool = MiniVisionModelPool(quick=True)
    base = pool.load_model(PRETRAINED)
    builder = pool.builder
    for task in pool.model_names:
        test = builder.task_arrays(pool.profile, task, "test", 400)
        before = builder.evaluate(base, pool.head(task), test)["accuracy"]
        after = builder.evaluate(pool.load_model(task), pool.head(task), test)["accuracy"]
        assert after > before, f"{task}: expert {after:.3f} <= pretrained {before:.3f}"


@pytest.mark.realdata
def test_fb_run_quick_suite_under_unshare(tmp_path, configured_cache):
    """The real ``fb run -p mini-vision -s modelpool.quick=true`` with no network, once CI has built the quick suite."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not permitted here")
    if not mb.BUILDER.is_built(mb.BUILDER.profile_for(True), 0):
        pytest.skip("the quick suite is not built: run `fb suites build mini-vision --quick` first")
    fb = Path(sys.executable).with_name("fb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSIONBENCH_PROGRESS": "0"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    proc = subprocess.run(["unshare", "-n", str(fb), "run", "-p", "mini-vision", "-s", "modelpool.quick=true",
                           "--json", "-o", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report["tasks"]) == set(mb.QUICK_TASKS)
    assert all(0.0 < m["accuracy"] <= 1.0 for m in report["tasks"].values())


def test_a_sweeps_seeds_pick_the_experts_trained_with_that_seed(tiny, tmp_path):
    """The pool's seed option follows the run seed: per-seed experts, references and one leaderboard."""
    from fusionbench_core.config import ComponentSpec, RunConfig
    from fusionbench_core.experiments.store import open_store
    from fusionbench_core.experiments.sweep import load_spec, run_sweep
    from fusionbench_core.experiments.tables import build_leaderboards
    from fusionbench_core.run import execute

    spec_file = tmp_path / "seeds.yaml"
    spec_file.write_text("name: seeds\nmethods: {simple_average: {}}\nseeds: [0, 1]\nsuites: [mini-vision]\n"
                         "select_on: validation\n")
    with open_store(tmp_path / "r.sqlite3") as store:
        result = run_sweep(load_spec(spec_file), store)
        assert result.counts() == {"done": 6, "stored": 0, "left": 0}  # references per seed: 2 × 2, and 2 cells
        runs = {(r["kind"], r["seed"]): store.report(r["id"]) for r in store.runs(kind=None)}
        boards = build_leaderboards(store)
    assert set(runs) == {(k, s) for k in ("pretrained", "individual", "fused") for s in (0, 1)}
    fused0, fused1 = runs["fused", 0], runs["fused", 1]
    assert fused0["modelpool"] == fused1["modelpool"] == {"name": "mini-vision"}  # the seed is the run's, once
    assert fused0["cell"]["inputs"]["modelpool"] != fused1["cell"]["inputs"]["modelpool"]  # other experts
    assert runs["individual", 0]["tasks"] != runs["individual", 1]["tasks"]
    assert runs["pretrained", 0]["tasks"] == runs["pretrained", 1]["tasks"]  # the pretrained model is shared
    pinned = execute(RunConfig(ComponentSpec("simple_average", {}), ComponentSpec("mini-vision", {"seed": 1}),
                               ComponentSpec("mini-vision", {}), seed=0), write=False)
    assert pinned["tasks"] == fused1["splits"]["test"]["tasks"]  # seed 1 served seed 1's experts
    assert [b.suite for b in boards] == ["mini-vision"]
    rows = {row.method: row for row in boards[0].rows}
    assert rows["simple_average"].seeds == rows["_individual_"].seeds == [0, 1]
