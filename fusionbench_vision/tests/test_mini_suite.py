"""The mini-vision suite on tiny synthetic stand-in data: build, frozen heads, determinism, resume, pools, CLI.

Every test here swaps the packaged data for small synthetic images and the build variants for
a tiny encoder (1 layer, width 16), through the module attributes the build reads
(``build.DATA_SOURCE``, ``build.PROFILES``), with the cache in ``tmp_path``.
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
                      pretrain_batch=16, train_examples=48, epochs=3, batch=16, lr=5e-4, eval_examples=None)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Synthetic data, tiny variants, cache under ``tmp_path``; returns a function to point the cache elsewhere."""
    torch.set_num_threads(1)
    monkeypatch.setattr(mb, "DATA_SOURCE", synthetic_arrays)
    monkeypatch.setattr(mb, "_ARRAYS", {})
    monkeypatch.setattr(mb, "PROFILES", {"full": tiny_profile("full"), "quick": tiny_profile("quick")})
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))

    def use_cache(path: Path) -> None:
        monkeypatch.setenv("FUSIONBENCH_CACHE", str(path))

    return use_cache


def safetensors_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_build_freezes_heads_and_trains_encoders(tiny):
    profile = mb.PROFILES["full"]
    summary = mb.build(profile, seed=0)
    assert summary["experts"] == "2 trained, 0 cached"
    root = mb.suite_dir(profile)
    pretrained = mm.load_encoder(root / "pretrained")
    from safetensors.torch import load_file

    base = load_file(str(root / "pretrained" / mm.MODEL_FILE))
    assert "encoder.layers.0.self_attn.q_proj.weight" in base and not any(k.endswith("position_ids") for k in base)
    assert type(pretrained).__name__ == "CLIPVisionModel"
    for task in TASKS:
        expert_dir = mb.expert_dir(profile, 0, task)
        # The head the expert was trained under is bit-identical to the one fitted on pretrained features.
        assert (expert_dir / mm.HEAD_FILE).read_bytes() == mb.head_path(profile, task).read_bytes()
        expert = load_file(str(expert_dir / mm.MODEL_FILE))
        assert expert.keys() == base.keys()
        moved = sum(float((expert[k] - base[k]).abs().sum()) for k in base)
        assert moved > 0, f"{task}: fine-tuning left the encoder unchanged"
        # Fine-tuning under the frozen head lowered the training loss below the linear probe's.
        head = mm.load_head(mb.head_path(profile, task))
        train = synthetic_arrays(task, "train")
        tuned = mm.load_encoder(expert_dir)
        assert mb.evaluate(tuned, head, train)["loss"] < mb.evaluate(pretrained, head, train)["loss"]
        assert json.loads((expert_dir / "info.json").read_text())["train_examples"] == SIZES["train"]
    # The linear probe fitted on pretrained features is far above chance (1/3) on its training data.
    head = mm.load_head(mb.head_path(profile, "mnist"))
    assert mb.evaluate(pretrained, head, synthetic_arrays("mnist", "train"))["accuracy"] > 0.7


def test_fit_head_is_a_logistic_regression_optimum():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 4, generator=gen)
    labels = (feats[:, 0] > 0).long().numpy()
    head = mb.fit_head(feats, labels, 2, l2=1e-2)
    w = torch.nn.Parameter(head.weight.double().clone())
    b = torch.nn.Parameter(head.bias.double().clone())
    loss = torch.nn.functional.cross_entropy(feats.double() @ w.T + b, torch.from_numpy(labels)) + 1e-2 * w.pow(2).sum()
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-4 and float(b.grad.abs().max()) < 1e-4
    assert not head.weight.requires_grad


def test_two_builds_give_identical_bytes_and_resume_matches(tiny, tmp_path):
    profile = mb.PROFILES["full"]
    tiny(tmp_path / "a")
    mb.build(profile, seed=1)
    first = safetensors_bytes(mb.suite_dir(profile))
    tiny(tmp_path / "b")
    mb.build(profile, seed=1)
    assert safetensors_bytes(mb.suite_dir(profile)) == first
    tiny(tmp_path / "c")
    partial = mb.build(profile, seed=1, stop_after=1)
    assert partial["stopped"] == "after 1 experts"
    assert (mb.expert_dir(profile, 1, TASKS[0]) / mm.MODEL_FILE).exists()
    assert not mb.expert_dir(profile, 1, TASKS[1]).exists()
    assert not mb.is_built(profile, 1)
    resumed = mb.build(profile, seed=1)
    assert resumed["experts"] == "1 trained, 1 cached"
    assert safetensors_bytes(mb.suite_dir(profile)) == first
    assert len(first) == 1 + len(TASKS) + 2 * len(TASKS)  # pretrained, heads, expert model + head


def test_other_seed_gives_other_experts_same_pretrained(tiny):
    profile = mb.PROFILES["full"]
    mb.build(profile, seed=0)
    mb.build(profile, seed=1)
    a = (mb.expert_dir(profile, 0, "mnist") / mm.MODEL_FILE).read_bytes()
    b = (mb.expert_dir(profile, 1, "mnist") / mm.MODEL_FILE).read_bytes()
    assert a != b
    assert not list(mb.suite_dir(profile).glob("**/.*tmp*")), "temporary files left behind"


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
    assert mb.is_built(mb.PROFILES["quick"], 0)
    assert not mb.suite_dir(mb.PROFILES["full"]).exists(), "the full variant was built for a quick run"


def test_fb_suites_build_cli_and_bad_option(tiny, fb_cli):
    result = fb_cli("suites", "build", "mini-vision", "--quick", "--seed", "2")
    assert result.exit_code == 0, result.stderr
    assert mb.is_built(mb.PROFILES["quick"], 2)
    again = fb_cli("suites", "build", "mini-vision", "--quick", "--seed", "2")
    assert "0 trained, 2 cached" in again.stdout
    bad = fb_cli("run", "-p", "mini-vision", "-s", "modelpool.qiuck=true")
    assert bad.exit_code != 0 and "qiuck" in bad.stderr


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
from fusionbench_vision.mini import build as mb
mb.DATA_SOURCE = t.synthetic_arrays
mb.PROFILES.update(full=t.tiny_profile("full"), quick=t.tiny_profile("quick"))
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
def test_quick_variant_on_real_data_experts_beat_pretrained():
    """The real ``--quick`` suite (built if missing, about 2 minutes): every expert beats the linear probe on its task."""
    if not _real_sources():
        pytest.skip("offline data sources are not installed (scripts/install-offline-data.sh)")
    # The configured cache on purpose: CI builds the quick suite there first (`make test`), so this
    # checks the very models `fb run` uses, and costs a build only where none exists yet.
    torch.set_num_threads(1)
    pool = MiniVisionModelPool(quick=True)
    base = pool.load_model(PRETRAINED)
    for task in pool.model_names:
        test = mb.task_arrays(task, "test", 400)
        before = mb.evaluate(base, pool.head(task), test)["accuracy"]
        after = mb.evaluate(pool.load_model(task), pool.head(task), test)["accuracy"]
        assert after > before, f"{task}: expert {after:.3f} <= pretrained {before:.3f}"


@pytest.mark.realdata
def test_fb_run_quick_suite_under_unshare(tmp_path):
    """The real ``fb run -p mini-vision -s modelpool.quick=true`` with no network, once CI has built the quick suite."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not permitted here")
    if not mb.is_built(mb.PROFILES["quick"], 0):
        pytest.skip("the quick suite is not built: run `fb suites build mini-vision --quick` first")
    fb = Path(sys.executable).with_name("fb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSIONBENCH_PROGRESS": "0"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    proc = subprocess.run(["unshare", "-n", str(fb), "run", "-p", "mini-vision", "-s", "modelpool.quick=true",
                           "--json", "-o", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report["tasks"]) == set(mb.EXPERT_TASKS)
    assert all(0.0 < m["accuracy"] <= 1.0 for m in report["tasks"].values())
