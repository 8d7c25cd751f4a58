"""The CLIP suites are registered without torch, list their tasks and ids, and carry complete task data."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusionbench_vision.suites import SUITES, TA8, TALL14, TALL20
from fusionbench_vision.tasks import all_tasks, get_task

# Class counts of the datasets themselves (not of our files): a truncated or padded list fails here.
CLASS_COUNTS = {
    "sun397": 397, "stanford-cars": 196, "resisc45": 45, "eurosat": 10, "svhn": 10, "gtsrb": 43, "mnist": 10,
    "dtd": 47, "oxford_flowers102": 102, "pcam": 2, "fer2013": 7, "oxford-iiit-pet": 37, "stl10": 10,
    "cifar100": 100, "cifar10": 10, "food101": 101, "fashion_mnist": 10, "emnist_letters": 26, "kmnist": 10,
    "rendered-sst2": 2,
}


def test_task_lists_match_the_published_suites():
    assert len(TA8) == 8 and len(TALL14) == 14 and len(TALL20) == 20
    assert TALL14[:8] == TA8 and TALL20[:14] == TALL14
    assert len(set(TALL20)) == 20


@pytest.mark.parametrize("task", sorted(CLASS_COUNTS))
def test_every_task_has_complete_class_names_and_templates(task):
    spec = get_task(task)
    assert len(spec.classnames) == CLASS_COUNTS[task]
    assert len(set(spec.classnames)) == len(spec.classnames)
    assert spec.templates and all("{c}" in t for t in spec.templates)
    assert spec.prompts("zebra")[0].count("zebra") == 1


def test_known_facts_of_the_task_data():
    assert set(all_tasks()) == set(TALL20)
    assert get_task("sun397").templates == ("a photo of a {c}.", "a photo of the {c}.")
    assert get_task("svhn").config == "cropped_digits" and get_task("food101").split == "validation"
    assert get_task("gtsrb").classnames[14] == "stop"
    assert get_task("stanford-cars").classnames[-1] == "smart fortwo Convertible 2012"
    assert get_task("eurosat").prompts("forest")[0] == "a centered satellite photo of forest."


def test_listing_does_not_import_torch():
    code = ("import sys; from fusionbench_core.plugins import get_host; h = get_host(); "
            "names = h.registry('modelpool').names() + h.registry('taskpool').names(); "
            "assert 'clip-vit-b32-ta8' in names, names; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_fb_modelpools_lists_every_suite_with_tasks_and_ids(fb_cli):
    result = fb_cli("modelpools", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in result.json}
    for name, suite in SUITES.items():
        assert rows[name]["tasks"] == suite.expert_tasks
        assert rows[name]["pretrained"] == suite.pretrained_id
    assert rows["clip-vit-l14-tall20"]["models"]["emnist_letters"] == "tanganke/clip-vit-large-patch14_emnist_letters"
    assert rows["clip-vit-b16-ta8-lora16"]["models"]["dtd"] == "tanganke/clip-vit-base-patch16_dtd_lora-16"
    assert len(rows["clip-vit-b32-robustness"]["corruptions"]) == 7


def test_fb_modelpools_show_gives_tasks_and_ids(fb_cli):
    result = fb_cli("modelpools", "show", "clip-vit-b32-ta8", "--json")
    assert result.exit_code == 0, result.stderr
    shown = result.json
    assert shown["tasks"] == TA8
    assert shown["pretrained"] == "openai/clip-vit-base-patch32"
    assert shown["models"]["stanford-cars"] == "tanganke/clip-vit-base-patch32_stanford-cars"
    assert {opt["name"] for opt in shown["options"]} >= {"pretrained", "models", "tasks"}


def test_fb_taskpools_show_gives_datasets(fb_cli):
    result = fb_cli("taskpools", "show", "clip-vit-b32-tall20", "--json")
    assert result.exit_code == 0, result.stderr
    datasets = result.json["datasets"]
    assert datasets["svhn"].startswith("ufldl-stanford/svhn/cropped_digits [test], 10 classes")
    assert datasets["food101"].startswith("ethz/food101 [validation], 101 classes")
    assert "examples" in {opt["name"] for opt in result.json["options"]}


def test_every_suite_is_one_pool_class_looked_up_by_name():
    from fusionbench_core.plugins import get_host

    host = get_host()
    modelpools = {e.name: e.target_path for e in host.registry("modelpool").entries() if e.name in SUITES}
    taskpools = {e.name: e.target_path for e in host.registry("taskpool").entries() if e.name in SUITES}
    assert set(modelpools.values()) == {"fusionbench_vision.modelpool:CLIPVisionModelPool"}
    assert taskpools["clip-vit-b16-robustness"] == "fusionbench_vision.taskpool:CLIPRobustnessTaskPool"
    assert taskpools["clip-vit-l14-tall20"] == "fusionbench_vision.taskpool:CLIPZeroShotTaskPool"

    from fusionbench_core.errors import UnknownComponentError
    from fusionbench_vision.modelpool import CLIPVisionModelPool
    from fusionbench_vision.taskpool import CLIPRobustnessTaskPool, CLIPZeroShotTaskPool

    pool = CLIPVisionModelPool("clip-vit-l14-tall20")
    assert pool.model_ids["kmnist"] == "tanganke/clip-vit-large-patch14_kmnist" and len(pool.model_names) == 20
    assert CLIPVisionModelPool("clip-vit-b16-ta8-lora16").model_ids["dtd"] == "tanganke/clip-vit-base-patch16_dtd_lora-16"
    assert CLIPZeroShotTaskPool("clip-vit-b16-tall14").pretrained_id == "openai/clip-vit-base-patch16"
    assert len(CLIPRobustnessTaskPool("clip-vit-b32-robustness").task_names) == 4 * 8
    with pytest.raises(UnknownComponentError, match="clip-vit-b32-ta8"):
        CLIPVisionModelPool("clip-vit-b32-ta9")


def test_clip_evaluation_is_fp32_by_default_on_every_device():
    import torch

    from fusionbench_vision.taskpool import CLIPZeroShotTaskPool
    from fusionbench_vision.zeroshot import autocast_dtype

    pool = CLIPZeroShotTaskPool("clip-vit-b32-ta8")
    assert pool.precision == "fp32" and {o.name: o.default for o in pool.options}["precision"] == "fp32"
    assert autocast_dtype(pool.precision, torch.device("cuda")) is None  # upstream: Fabric precision null
    assert autocast_dtype("fp16", torch.device("cuda")) is torch.float16  # opt-in
    assert autocast_dtype("auto", torch.device("cuda")) is torch.float16


def test_upstreams_named_suites_exist_with_their_task_lists():
    for backbone in ("b32", "b16", "l14"):
        for n in (10, 12, 16, 18):
            assert SUITES[f"clip-vit-{backbone}-tall{n}"].tasks == TALL20[:n]
    assert TALL20[:10][-2:] == ["oxford_flowers102", "pcam"] and TALL20[:18][-1] == "emnist_letters"
    exp1, exp2 = SUITES["clip-vit-b32-generalization-exp1"], SUITES["clip-vit-b32-generalization-exp2"]
    assert exp1.expert_tasks == ["sun397", "stanford-cars", "resisc45", "dtd", "svhn", "gtsrb"]
    assert exp1.unseen == ["mnist", "eurosat"] and exp1.tasks == exp1.expert_tasks + exp1.unseen
    assert exp2.expert_tasks == ["sun397", "stanford-cars", "gtsrb", "eurosat", "dtd", "mnist"]
    assert exp2.unseen == ["resisc45", "svhn"]
    assert set(exp1.expert_ids) == set(exp1.expert_tasks)


def test_robustness_beyond_b32_says_it_has_no_upstream_reference(fb_cli):
    rows = {row["name"]: row for row in fb_cli("taskpools", "--json").json}
    assert rows["clip-vit-b32-robustness"]["upstream_reference"] is True
    for name in ("clip-vit-b16-robustness", "clip-vit-l14-robustness"):
        assert rows[name]["upstream_reference"] is False and "no upstream reference" in rows[name]["summary"]
    assert all(rows[name]["upstream_reference"] for name in SUITES if "robustness" not in name)
