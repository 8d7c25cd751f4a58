"""The whole CLIP path offline: hub ids → local model root, loading, heads (cached), evaluation, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusionbench_vision.suites import TA8

from .conftest import head_files


def test_fb_run_task_arithmetic_on_the_local_root(b32_ta8_run, clip_roots):
    result = b32_ta8_run
    assert result.exit_code == 0, result.stderr + str(result.exception)
    report = result.json
    assert list(report["tasks"]) == TA8
    # The oracle: the same merge done in memory, by hand, scored by the task pool directly.
    pool, tasks = _pools()
    from fusionbench_core.protocols import PRETRAINED

    base = pool.tensors(PRETRAINED)
    experts = [pool.tensors(task) for task in TA8]
    merged = {key: base.get(key) + 0.3 * sum(e.get(key) - base.get(key) for e in experts) for key in base.keys()}
    expected = tasks.evaluate(pool.build_model(merged)).tasks
    for task, metrics in report["tasks"].items():
        assert metrics["accuracy"] == pytest.approx(expected[task]["accuracy"])
        assert metrics["loss"] == pytest.approx(expected[task]["loss"], rel=1e-4)
        # 12 test images per task in the tiny data root: accuracy is a multiple of 1/12.
        assert abs(metrics["accuracy"] * 12 - round(metrics["accuracy"] * 12)) < 1e-9
    assert report["average"]["accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in report["tasks"].values()]))
    assert json.loads((clip_roots[0].parent / "run" / "report.json").read_text())["tasks"] == report["tasks"]
    assert len(head_files(clip_roots[2])) == len(TA8)


def _pools(**taskpool_options):
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.taskpool import CLIPZeroShotTaskPool

    return (CLIPVisionModelPool("clip-vit-b32-ta8"),
            CLIPZeroShotTaskPool("clip-vit-b32-ta8", num_workers=0, **taskpool_options))


def test_heads_are_cached_and_reused(b32_ta8_run, clip_roots, monkeypatch):
    from fusionbench_vision.zeroshot import ZeroShotClassifier

    files = head_files(clip_roots[2])
    stamps = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr(ZeroShotClassifier, "build_head", lambda self, spec: pytest.fail("head rebuilt"))
    pool, tasks = _pools(tasks=["mnist", "dtd"])
    report = tasks.evaluate(pool.load_model("mnist"))
    assert set(report.tasks) == {"mnist", "dtd"}
    assert [f.stat().st_mtime_ns for f in head_files(clip_roots[2])] == stamps


def test_zero_shot_logits_match_transformers_clip(clip_roots):
    """Single-template task: our head and scoring equal CLIPModel's logits_per_image with the vision tower swapped."""
    from transformers import AutoTokenizer, CLIPModel

    from fusionbench_vision.tasks import get_task

    pool, tasks = _pools(tasks=["mnist"])
    expert = pool.load_model("mnist")
    spec = get_task("mnist")
    images, labels = tasks.images("mnist").load()
    classifier = tasks.classifier
    pixels = classifier.pixels(torch.from_numpy(np.array(images)))
    ours = classifier.logits(expert, pixels, classifier.head(spec))

    path = clip_roots[0] / "openai/clip-vit-base-patch32"
    clip = CLIPModel.from_pretrained(str(path)).eval()
    clip.vision_model.load_state_dict(getattr(expert, "vision_model", expert).state_dict())  # 4.x nests it
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    text = tokenizer([spec.prompts(c)[0] for c in spec.classnames], padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = clip(**text, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)

    report = tasks.evaluate(expert).tasks["mnist"]
    assert report["accuracy"] == pytest.approx((reference.argmax(1) == torch.from_numpy(labels)).double().mean().item())
    assert report["loss"] == pytest.approx(torch.nn.functional.cross_entropy(reference, torch.from_numpy(labels)).item(), rel=1e-4)


def test_head_averages_normalised_template_embeddings(clip_roots):
    from transformers import AutoTokenizer, CLIPModel

    from fusionbench_vision.tasks import get_task

    _, tasks = _pools(tasks=["eurosat"])
    spec = get_task("eurosat")
    head = tasks.classifier.head(spec).cpu()
    path = clip_roots[0] / "openai/clip-vit-base-patch32"
    clip = CLIPModel.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with torch.inference_mode():
        enc = tokenizer(spec.prompts(spec.classnames[3]), padding=True, return_tensors="pt")
        emb = clip.text_projection(clip.text_model(**enc).pooler_output)
        row = torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=0)
        expected = row * clip.logit_scale.exp()
    assert head.shape == (10, 16)
    torch.testing.assert_close(head[3], expected, rtol=1e-5, atol=1e-5)


def test_preprocessing_matches_the_clip_image_processor(clip_roots):
    from PIL import Image
    import transformers

    # The Pillow backend: the default one needs torchvision, which the stack does not install.
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor

    _, tasks = _pools()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(45, 60, 3), dtype=np.uint8))
    processor = processor_cls.from_pretrained(str(clip_roots[0] / "openai/clip-vit-base-patch32"))
    expected = torch.as_tensor(np.asarray(processor(images=[image], return_tensors="np")["pixel_values"]))
    ours = tasks.classifier.pixels(torch.from_numpy(tasks.classifier.processing(image))[None])
    torch.testing.assert_close(ours.cpu(), expected.float(), atol=2.5 / 255 / 0.26, rtol=0)


def test_task_arithmetic_with_zero_scale_is_the_pretrained_model(clip_roots):
    from fusionbench_core.protocols import PRETRAINED
    from fusionbench_core.testing import invoke_fb

    merged = invoke_fb("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-ta8", "-s", "scaling_factor=0.0",
                       "-s", "taskpool.tasks=svhn,gtsrb", "-s", "taskpool.num_workers=0",
                       "-o", str(clip_roots[0].parent / "run-zero"), "--json")
    assert merged.exit_code == 0, merged.stderr
    pool, tasks = _pools(tasks=["svhn", "gtsrb"])
    pretrained = tasks.evaluate(pool.load_model(PRETRAINED)).tasks
    expert = tasks.evaluate(pool.load_model("svhn")).tasks
    for task in ("svhn", "gtsrb"):
        assert merged.json["tasks"][task] == pytest.approx(pretrained[task], rel=1e-5)
    assert expert["svhn"]["loss"] != pytest.approx(pretrained["svhn"]["loss"], rel=1e-6)


def test_pool_tensors_are_lazy_vision_tensors_and_build_roundtrips(clip_roots):
    from fusionbench_core.engine.sources import SafetensorsSource
    from fusionbench_core.protocols import PRETRAINED

    from fusionbench_vision.loading import VisionTowerSource

    pool, _ = _pools()
    base, expert = pool.tensors(PRETRAINED), pool.tensors("dtd")
    assert isinstance(base, VisionTowerSource) and isinstance(base.inner, SafetensorsSource)
    assert base.keys() == expert.keys() and all(k.startswith("vision_model.") for k in base.keys())
    state = {k: expert.get(k) for k in expert.keys()}
    rebuilt = pool.build_model(state)
    reference = pool.load_model("dtd")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(pixel_values=x).pooler_output, reference(pixel_values=x).pooler_output)


def test_examples_option_limits_and_is_seeded(clip_roots):
    _, tasks = _pools(examples=5, seed=3)
    images, labels = tasks.images("dtd").load()
    again, _ = _pools(examples=5, seed=3)[1].images("dtd").load()
    assert images.shape == (5, 3, 32, 32) and labels.shape == (5,)
    np.testing.assert_array_equal(images, again)


def test_data_model_pool_hands_out_batches_and_logits(clip_roots):
    from fusionbench_core.protocols import PRETRAINED, DataModelPool, DataRequest

    pool, _ = _pools()
    assert isinstance(pool, DataModelPool)
    batches = list(pool.batches("gtsrb", DataRequest(split="train", examples=6), batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 2]
    x, y = batches[0]
    logits = pool.logits("gtsrb", pool.load_model(PRETRAINED), x)
    assert logits.shape == (4, 43) and y.dtype == torch.int64
    assert list(pool.batches("gtsrb", DataRequest(split="train", examples=2, labelled=False)))[0][1] is None


def test_missing_model_offline_is_one_line_that_says_what_to_do(clip_roots, fb_cli):
    result = fb_cli("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-ta8",
                    "-s", "modelpool.models=mnist=tanganke/no-such-expert", "-s", "taskpool.tasks=mnist")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tanganke/no-such-expert" in lines[0]
    assert "FUSIONBENCH_MODEL_ROOT" in lines[0] and "put a copy at" in lines[0]


def test_wrong_architecture_is_one_line(clip_roots, fb_cli, tmp_path):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(str(tmp_path / "gpt2"))
    result = fb_cli("run", "-m", "task_arithmetic", "-p", "clip-vit-b32-ta8",
                    "-s", f"modelpool.models=mnist={tmp_path / 'gpt2'}", "-s", "taskpool.tasks=mnist")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'gpt2' model, not clip" in lines[0]
