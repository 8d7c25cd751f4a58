"""Tests of the example plugin, through its public surface only."""

import dataclasses

import pytest
import torch

from fusionbench_core.errors import ConfigError

from fusionbench_median.method import MedianMerging


def test_plugin_is_installed_and_listed(fb_cli):
    rows = {row["name"]: row for row in fb_cli("methods", "--json").json}
    assert rows["median"]["distribution"] == "fusionbench-median"
    assert rows["median"]["requirement"] == "data-free"


def test_median_of_three_hand_computed():
    models = [torch.tensor([1.0, 5.0, -2.0]), torch.tensor([3.0, 4.0, 0.0]), torch.tensor([2.0, 9.0, -1.0])]
    merged = MedianMerging().merge_tensor("w", None, iter(models))
    assert torch.equal(merged, torch.tensor([2.0, 5.0, -1.0]))


def test_median_of_two_is_their_average():
    merged = MedianMerging().merge_tensor("w", None, iter([torch.tensor([0.0, 2.0]), torch.tensor([4.0, 2.0])]))
    assert torch.equal(merged, torch.tensor([2.0, 2.0]))


def test_median_of_task_vectors_adds_to_pretrained():
    base = torch.tensor([10.0])
    models = [torch.tensor([11.0]), torch.tensor([13.0]), torch.tensor([9.0])]
    merged = MedianMerging(of_task_vectors=True, scaling_factor=0.5).merge_tensor("w", base, iter(models))
    assert torch.equal(merged, torch.tensor([10.5]))


def test_median_of_task_vectors_without_a_pretrained_model_is_a_one_line_config_error():
    # A ConfigError is what fb shows as one `Error:` line; a ValueError would be reported as a bug.
    with pytest.raises(ConfigError, match=r"^method 'median': of_task_vectors=true needs a pretrained model$"):
        MedianMerging(of_task_vectors=True).merge_tensor("w", None, iter([torch.zeros(1), torch.ones(1)]))


def test_identical_models_merge_to_that_model(tiny_modelpool):
    pool = tiny_modelpool(n_models=3)
    expected = pool.load_model("task1").state_dict()
    same = pool.suite.finetuned["task1"]
    # A private copy of the (cached, shared) suite with every fine-tuned model replaced by task1's.
    pool.suite = dataclasses.replace(pool.suite, finetuned={name: same for name in pool.suite.finetuned})
    fused = MedianMerging().run(pool)
    for key, value in fused.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_runs_through_fb_run(fb_cli, tmp_path):
    result = fb_cli("run", "-m", "median", "-p", "tiny", "-o", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert result.json["method"] == "median"
    assert set(result.json["tasks"]) == {"task0", "task1", "task2"}
