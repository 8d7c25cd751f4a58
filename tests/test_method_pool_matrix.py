"""Every registered method on a tiny fixture of every pool family, in upstream's layout (issue #23).

The families: ``tiny`` (core's in-memory suite), CLIP ViT-B/32 TA8 (vision towers saved as
``CLIPVisionModel`` checkpoints, as upstream's experts are), GPT-2 GLUE (classification experts with
their own heads) and Flan-T5-base GLUE (text to text), each cut to three tasks. The registry generates
the matrix, so a newly installed method gets its row without editing this file.

For each (method, pool), :func:`fusionbench_core.run.execute`, the program behind ``fb run``, either
fuses and the suite's task pool scores the result on every task, or refuses in one line naming the
method and the pool; which of the two must be what ``fb methods show`` says, from the method's declared
needs and the pool's declared capabilities (:mod:`fusionbench_core.needs`). Settings are tiny and passed
explicitly (``steps=2``, ``examples=4``, ...); no default is changed. Where an independent reference
exists it is checked: the simple average against the mean of the experts' tensors, task arithmetic
against θ₀ + λ Σ τᵢ.
"""

from __future__ import annotations

import math
import os

import pytest

from fusionbench_core.config import ComponentSpec, RunConfig
from fusionbench_core.errors import ConfigError
from fusionbench_core.needs import suite_verdict
from fusionbench_core.plugins import get_host
from fusionbench_core.protocols import PRETRAINED, Capability, method_needs

HOST = get_host()
METHODS = HOST.registry("method").names()
"""Every registered method (installed plugins included)."""

CLIP_TASKS = ["sun397", "stanford-cars", "mnist"]
GLUE_TASKS = ["cola", "rte", "sst2"]
NLP_OPTIONS = {"tasks": GLUE_TASKS, "max_examples": 4}
POOLS = {
    "tiny": ({}, {}),
    "clip-vit-b32-ta8": ({"tasks": CLIP_TASKS}, {"tasks": CLIP_TASKS, "num_workers": 0, "device": "cpu"}),
    "gpt2-glue": (NLP_OPTIONS, {**NLP_OPTIONS, "device": "cpu"}),
    "flan-t5-base-glue": (NLP_OPTIONS, {**NLP_OPTIONS, "device": "cpu"}),
}
"""Suite → (model pool options, task pool options): three tasks each, a few examples."""
TASKS = {"tiny": ["task0", "task1", "task2"], "clip-vit-b32-ta8": CLIP_TASKS, "gpt2-glue": GLUE_TASKS,
         "flan-t5-base-glue": GLUE_TASKS}
TWO = {"tiny": {"n_models": 2}, "clip-vit-b32-ta8": {"tasks": CLIP_TASKS[:2]}, "gpt2-glue": {"tasks": GLUE_TASKS[:2]},
       "flan-t5-base-glue": {"tasks": GLUE_TASKS[:2]}}
"""Model pool options that select two models, for the methods that need exactly two."""

SMALL = {"examples": 4, "steps": 2, "iterations": 2, "batch_size": 4, "max_iter": 2, "device": "cpu"}
"""Tiny settings, given to each method that declares the hyperparameter."""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Tiny CLIP, GPT-2 and Flan-T5 checkpoints and datasets under their hub ids, in one model and data root."""
    import torch

    from fusionbench_nlp.tiny_hub import build_tiny_hub
    from fusionbench_vision.suites import SUITES
    from fusionbench_vision.testing import build_data_root, build_model_root

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    root = tmp_path_factory.mktemp("matrix-hub")
    build_tiny_hub(root)  # writes root/models and root/data
    build_model_root(root / "models", SUITES["clip-vit-b32-ta8"])
    build_data_root(root / "data", CLIP_TASKS)
    patch = pytest.MonkeyPatch()
    patch.setenv("FUSIONBENCH_MODEL_ROOT", str(root / "models"))
    patch.setenv("FUSIONBENCH_DATA_ROOT", str(root / "data"))
    patch.setenv("FUSIONBENCH_CACHE", str(root / "cache"))
    patch.setenv("HF_DATASETS_CACHE", str(root / "hf-datasets"))
    yield root
    patch.undo()


def _method(name: str):
    return HOST.registry("method").get(name)


def _settings(name: str, **extra) -> dict:
    declared = {hp.name for hp in _method(name).hyperparameters}
    return {**{key: value for key, value in SMALL.items() if key in declared}, **extra}


def _verdict(method: str, pool: str) -> bool | None:
    """What ``fb methods show METHOD`` says of POOL: true (runs), false (refused) or None (undeclared)."""
    runs, _ = suite_verdict(method_needs(_method(method)), HOST.registry("modelpool").entry(pool).metadata,
                            HOST.registry("taskpool").entry(pool).metadata)
    return runs


def _execute(method: str, pool: str, modelpool_options: dict | None = None) -> dict:
    from fusionbench_core.run import execute

    model_options, task_options = POOLS[pool]
    config = RunConfig(ComponentSpec(method, _settings(method)),
                       ComponentSpec(pool, dict(modelpool_options or model_options)),
                       ComponentSpec(pool, dict(task_options)))
    return execute(config, HOST, write=False)


def _check_refusal(error: ConfigError, method: str, pool: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert f"'{method}'" in message and f"'{pool}'" in message, message


def _check_scored(report: dict, tasks: list[str]) -> None:
    assert list(report["tasks"]) == tasks
    for metrics in report["tasks"].values():
        assert metrics and all(math.isfinite(value) for value in metrics.values()), metrics
        if "accuracy" in metrics:
            assert 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_every_pool_family_or_refuses_in_one_line(hub, method, pool):
    verdict = _verdict(method, pool)
    assert verdict is not None, f"suite '{pool}' declares nothing about a need of '{method}'"
    expected_to_run = verdict and Capability.TWO_MODELS not in method_needs(_method(method))  # 3 models here
    try:
        report = _execute(method, pool)
    except ConfigError as error:
        assert not expected_to_run, f"`fb methods show {method}` says it runs on {pool}, but: {error}"
        _check_refusal(error, method, pool)
        return
    assert expected_to_run, f"`fb methods show {method}` says it does not run on {pool}, but it ran"
    assert report["method"] == method
    _check_scored(report, TASKS[pool])


TWO_MODEL_METHODS = [name for name in METHODS if Capability.TWO_MODELS in method_needs(_method(name))]


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("method", TWO_MODEL_METHODS)
def test_methods_of_two_models_run_once_two_are_selected(hub, method, pool):
    options = {**POOLS[pool][0], **TWO[pool]}
    try:
        report = _execute(method, pool, options)
    except ConfigError as error:
        assert _verdict(method, pool) is False, f"{method} on two models of {pool}: {error}"
        _check_refusal(error, method, pool)
        return
    assert _verdict(method, pool) is True
    _check_scored(report, TASKS[pool])  # the task pool still scores all three tasks


def test_the_matrix_covers_every_kind_of_method():
    requirements = {str(_method(name).requirement.value) for name in METHODS}
    assert {"data-free", "train-statistics", "test-time", "training"} <= requirements
    assert {"simple_average", "regmean", "fisher_merging", "task_wise_adamerging", "wemoe", "smile",
            "weight_matching", "simple_ensemble"} <= set(METHODS)


# -- independent references -----------------------------------------------------------------------------


def _pool(name: str):
    from fusionbench_core.run import instantiate

    return instantiate(HOST, "modelpool", ComponentSpec(name, dict(POOLS[name][0])))


def _floats(model) -> dict:
    return {key: value.detach().double() for key, value in model.state_dict().items() if value.is_floating_point()}


@pytest.mark.parametrize("pool", list(POOLS))
def test_simple_average_is_the_mean_of_the_experts_tensors(hub, pool):
    import torch

    modelpool = _pool(pool)
    experts = [_floats(modelpool.load_model(name)) for name in modelpool.model_names]
    assert len(experts) == 3
    merged = _floats(_method("simple_average")().run(modelpool))
    assert set(merged) == set(experts[0])
    for key, value in merged.items():
        torch.testing.assert_close(value, sum(e[key] for e in experts) / 3, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pool", list(POOLS))
def test_task_arithmetic_is_the_base_plus_lambda_times_the_summed_task_vectors(hub, pool):
    import torch

    modelpool = _pool(pool)
    base = _floats(modelpool.load_model(PRETRAINED))
    experts = [_floats(modelpool.load_model(name)) for name in modelpool.model_names]
    merged = _floats(_method("task_arithmetic")(scaling_factor=0.7).run(modelpool))
    assert set(merged) == set(base)
    moved = 0.0
    for key, value in merged.items():
        expected = base[key] + 0.7 * sum(e[key] - base[key] for e in experts)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((value - base[key]).abs().max()))
    assert moved > 1e-3  # the experts differ from the base: the check compares something


def test_fb_run_refuses_an_unsupported_pool_in_one_line_naming_both(hub, fb_cli, tmp_path):
    out = fb_cli("run", "-m", "wemoe", "-p", "gpt2-glue", "--no-store", "-s", "steps=2",
                 "-s", "modelpool.tasks=cola,rte", "-s", "taskpool.tasks=cola,rte", "-o", str(tmp_path / "run"))
    assert out.exit_code == 1
    assert out.stderr.strip().splitlines() == [
        "Error: method 'wemoe' needs linear layers that are modules of ArchitectureSpec.linear_types (nn.Linear), "
        "which model pool 'gpt2-glue' does not provide (capability 'linear-modules': its linear layers are "
        "transformers' input-major Conv1D, not nn.Linear)"]
    assert not (tmp_path / "run").exists()


def test_fb_methods_show_names_the_suites_a_method_runs_on(fb_cli):
    rows = {row["family"]: row for row in fb_cli("methods", "show", "wemoe", "--json").json["pools"]}
    assert rows["tiny"]["runs"] is True and rows["flan-t5-*"]["runs"] is True
    assert rows["gpt2-glue"]["pools"] == ["gpt2-glue"] and rows["gpt2-glue"]["runs"] is False
    assert rows["gpt2-glue"]["missing"] == ["linear-modules"] and "Conv1D" in rows["gpt2-glue"]["why"]["linear-modules"]
    ensemble = {row["family"]: row for row in fb_cli("methods", "show", "simple_ensemble", "--json").json["pools"]}
    assert ensemble["flan-t5-*"]["runs"] is False and ensemble["flan-t5-*"]["missing"] == ["class-logits"]
    assert ensemble["gpt2-glue"]["runs"] is True


# -- the declarations themselves ------------------------------------------------------------------------


def test_needs_follow_from_the_requirement_the_pretrained_flag_and_the_declaration():
    from fusionbench_core.protocols import BaseAlgorithm, Requirement

    class Declared(BaseAlgorithm):
        name = "declared"
        requirement = Requirement.TEST_TIME
        needs_pretrained = True
        needs = ("two-models", Capability.ARCHITECTURE)

    assert method_needs(Declared) == (Capability.DATA, Capability.PRETRAINED, Capability.ARCHITECTURE,
                                      Capability.TWO_MODELS)
    assert method_needs(_method("simple_average")) == ()  # needs_pretrained = False, data-free
    assert method_needs(_method("task_arithmetic")) == (Capability.PRETRAINED,)

    class Misspelt(BaseAlgorithm):
        name = "misspelt"
        needs = ("two_models",)

    with pytest.raises(ConfigError, match=r"^method 'misspelt' declares an unknown need 'two_models' \(known: data,"):
        method_needs(Misspelt)


def test_a_pool_that_declares_nothing_is_left_to_the_method_and_one_that_declares_is_held_to_it():
    from fusionbench_core.needs import check_needs
    from fusionbench_core.tiny import TinyModelPool, TinyTaskPool

    pool, tasks = TinyModelPool(), TinyTaskPool()
    wemoe = _method("wemoe")
    check_needs(wemoe, pool, tasks)  # nothing declared: the object meets data, pretrained and architecture
    check_needs(wemoe, pool, tasks, provides=["data", "pretrained", "architecture", "linear-modules"])
    with pytest.raises(ConfigError, match=r"^method 'wemoe' needs linear layers .* which model pool 'tiny' does not "
                                          r"provide \(capability 'linear-modules': made of Conv1D\)$"):
        check_needs(wemoe, pool, tasks, provides=["data", "pretrained", "architecture"],
                    lacks={"linear-modules": "made of Conv1D"})
    with pytest.raises(ConfigError, match=r"^method 'simple_ensemble' needs a task pool that scores class logits .* "
                                          r"task pool 'tiny' does not provide \(capability 'class-logits'\)$"):
        check_needs(_method("simple_ensemble"), pool, tasks, taskpool_provides=[])
    with pytest.raises(ConfigError, match=r"^method 'slerp' needs exactly 2 models, got 3 in model pool 'tiny'$"):
        check_needs(_method("slerp")(), pool, tasks)
    check_needs(_method("slerp")(), TinyModelPool(n_models=2), tasks)
