"""Model mixing: the invariants of C.12, routing by hand, save and load, gradients, and every method via fb."""

from __future__ import annotations

import math

import pytest
import torch
from fusionbench_methods.task_arithmetic import TaskArithmetic
from fusionbench_mixing.depth_upscaling import DepthUpscaling, parse_layer_indices
from fusionbench_mixing.modules import SmileLinear, UpcycledMoE, WeightEnsemblingMLP
from fusionbench_mixing.moe_upcycling import MoEUpcycling
from fusionbench_mixing.rankone_moe import RankOneMoE
from fusionbench_mixing.smile import SmileUpscaling
from fusionbench_mixing.sparse_wemoe import SparseWeightEnsemblingMoE
from fusionbench_mixing.wemoe import WeightEnsemblingMoE

from fusionbench_core import PRETRAINED
from fusionbench_core.errors import ConfigError
from fusionbench_core.plugins import get_host
from fusionbench_core.protocols import STRUCTURE_FILE, ArchitectureSpec, SavesFusedModels
from fusionbench_core.tiny import TinyModelPool

QUICK = {"steps": 2, "device": "cpu"}
"""Router training kept to two steps in tests."""

METHODS = {
    "smile": (SmileUpscaling, {}),
    "wemoe": (WeightEnsemblingMoE, QUICK),
    "sparse_wemoe": (SparseWeightEnsemblingMoE, QUICK),
    "rankone_moe": (RankOneMoE, QUICK),
    "depth_upscaling": (DepthUpscaling, {}),
    "moe_upcycling": (MoEUpcycling, {}),
}


def inputs(width: int = 8, n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# -- C.12 invariants ---------------------------------------------------------------------------------


def test_smile_with_one_model_and_full_rank_reproduces_the_finetuned_layers(tiny_modelpool):
    pool = tiny_modelpool(n_models=1)
    fused = SmileUpscaling(expert_rank=10_000, gate_rank=1, top_k=1).run(pool)
    finetuned = pool.load_model("task0")
    for name, width in (("0", 8), ("3", 16)):
        assert isinstance(fused.get_submodule(name), SmileLinear)
        exact(fused.get_submodule(name)(inputs(width)), finetuned.get_submodule(name)(inputs(width)))
    exact(fused[2].weight, pool.load_model(PRETRAINED)[2].weight)  # outside the linears: pretrained


def test_an_upcycled_moe_of_identical_experts_is_the_dense_model(tiny_modelpool):
    pool = tiny_modelpool()
    fused = MoEUpcycling(experts_from=PRETRAINED, num_experts=4, top_k=2, scaling_factor=0.0).run(pool)
    assert isinstance(fused[3], UpcycledMoE) and len(fused[3].experts) == 4
    assert fused[3].router.weight.abs().sum() > 0  # a real router, whose choice cannot matter here
    exact(fused(inputs()), pool.load_model(PRETRAINED)(inputs()))


def test_wemoe_with_a_constant_router_is_task_arithmetic(tiny_modelpool):
    pool = tiny_modelpool()
    fused = WeightEnsemblingMoE(steps=0, router_init_std=0.0, device="cpu").run(pool)
    assert isinstance(fused[0], WeightEnsemblingMLP) and isinstance(fused[3], WeightEnsemblingMLP)
    exact(fused(inputs()), TaskArithmetic(scaling_factor=0.3).run(pool)(inputs()))


def test_rankone_moe_with_a_constant_router_and_full_rank_is_task_arithmetic(tiny_modelpool):
    pool = tiny_modelpool()
    fused = RankOneMoE(steps=0, router_init_std=0.0, rank=16, device="cpu").run(pool)
    assert fused.get_submodule("0").u_0.shape == (3 * 8, 16)  # rank capped at min(16, 8) per task
    exact(fused(inputs()), TaskArithmetic(scaling_factor=0.3).run(pool)(inputs()))


def test_rankone_moe_defaults_follow_upstream_rank_and_one_layer_router(tiny_modelpool):
    method = RankOneMoE(steps=0, device="cpu")
    assert method.rank == 32 and method.router_hidden == 0  # upstream: rank_k 32, router_hidden_layers 1
    fused = method.run(tiny_modelpool())
    router = fused.get_submodule("3").router  # Linear 16→16: rank capped at 16 per task
    assert [type(layer).__name__ for layer in router.net] == ["Linear"] and router.net[0].out_features == 3 * 16
    deeper = RankOneMoE(steps=0, rank=2, router_hidden=5, device="cpu").run(tiny_modelpool())
    assert [type(layer).__name__ for layer in deeper.get_submodule("3").router.net] == ["Linear", "ReLU", "Linear"]
    assert deeper.get_submodule("3").router.net[0].out_features == 5


@pytest.mark.parametrize("cls", [WeightEnsemblingMoE, SparseWeightEnsemblingMoE, RankOneMoE])
def test_router_training_defaults_are_upstreams_protocol(cls):
    method = cls()
    assert (method.steps, method.lr, method.batch_size, method.init_lambda) == (1000, 1e-4, 16, 0.3)


def test_sparse_wemoe_keeps_the_largest_quarter_of_each_task_vector(tiny_modelpool):
    pool = tiny_modelpool()
    fused = SparseWeightEnsemblingMoE(sparsity=0.75, steps=0, device="cpu").run(pool)
    tau = pool.load_model("task1")[3].weight - pool.load_model(PRETRAINED)[3].weight
    stored = fused[3].task_vector_0[1]  # parameters in order weight, bias; task1
    keep = math.ceil(0.25 * tau.numel())
    assert int((stored != 0).sum()) == keep
    threshold = tau.abs().flatten().sort(descending=True).values[keep - 1]
    exact(stored, torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau)))
    exact(SparseWeightEnsemblingMoE(sparsity=0.0, steps=0, router_init_std=0.0, device="cpu").run(pool)(inputs()),
          TaskArithmetic(scaling_factor=0.3).run(pool)(inputs()))


def test_depth_indices_range_n_give_the_same_model(tiny_modelpool):
    pool = tiny_modelpool()
    fused = DepthUpscaling(layer_indices=["range(0,5)"]).run(pool)
    assert torch.equal(fused(inputs()), pool.load_model(PRETRAINED)(inputs()))


def test_depth_upscaling_stacks_copies_in_the_given_order(tiny_modelpool):
    pool = tiny_modelpool()
    fused = DepthUpscaling(layer_indices=["range(0,4)", 3, 4], model="task1").run(pool)
    layers = pool.load_model("task1")
    expected = inputs()
    for index in (0, 1, 2, 3, 3, 4):
        expected = layers[index](expected)
    assert len(fused) == 6 and fused[3] is not fused[4]
    assert torch.equal(fused(inputs()), expected)


def test_layer_indices_default_to_solars_split():
    assert parse_layer_indices([], 32) == list(range(0, 24)) + list(range(8, 32))
    assert parse_layer_indices(["range(0, 2)", 1, "range(3,0,-1)"], 4) == [0, 1, 1, 3, 2, 1]
    with pytest.raises(ConfigError, match="index 5 is out of range for a stack of 5 layers"):
        parse_layer_indices([5], 5)


# -- routing by hand ------------------------------------------------------------------------------------


def test_smile_routes_by_the_norm_of_the_gate_projections():
    layer = SmileLinear(2, 1, experts=2, rank=1, gate_rank=1, top_k=1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.gate.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # expert 0 sees x₀, expert 1 sees x₁
        layer.expert_v.copy_(torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]]))
        layer.expert_u.copy_(torch.tensor([[[10.0]], [[100.0]]]))
    x = torch.tensor([[3.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
    assert layer.routing_weights(x).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert layer(x).flatten().tolist() == [40.0, -200.0]  # 10·(3+1), 100·(1−3)
    layer.top_k = 2
    p = torch.softmax(torch.tensor([3.0, 1.0], dtype=torch.float64), dim=0)
    exact(layer(x[:1]).flatten(), (p[0] * 40 + p[1] * 400).reshape(1))


def test_upcycled_moe_renormalises_its_top_k_probabilities():
    experts = [torch.nn.Linear(2, 1, bias=True, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        for value, expert in zip((1.0, 10.0, 100.0), experts):
            expert.weight.zero_()
            expert.bias.fill_(value)
    moe = UpcycledMoE(experts, 2, top_k=2, dtype=torch.float64)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float64)  # logits 2, 1, 0: experts 0 and 1
    w = torch.softmax(torch.tensor([2.0, 1.0], dtype=torch.float64), dim=0)
    exact(moe(x).flatten(), (w[0] * 1.0 + w[1] * 10.0).reshape(1))


# -- gradients, cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [WeightEnsemblingMoE, RankOneMoE])
def test_training_changes_only_the_routers(cls, tiny_modelpool):
    pool = tiny_modelpool()
    before = cls(steps=0, device="cpu").run(pool).state_dict()
    method = cls(steps=3, lr=0.05, device="cpu")
    after = method.run(pool).state_dict()
    assert before.keys() == after.keys()
    routers = [key for key in before if ".router." in key]
    assert routers and all(not torch.equal(before[key], after[key]) for key in routers)
    assert all(torch.equal(before[key], after[key]) for key in before if key not in routers)
    assert method.cost["adaptation_steps"] == 3
    assert method.cost["forward_passes"] == method.cost["backward_passes"] == 3 * 3 * 16


def test_the_entropy_gradient_reaches_only_the_routers(tiny_modelpool):
    from fusionbench_data_methods.coefficient_merger import entropy

    pool = tiny_modelpool()
    fused = WeightEnsemblingMoE(steps=0, device="cpu").run(pool)
    routers = [fused[0].router, fused[3].router]
    for router in routers:
        router.requires_grad_(True)
    sum(entropy(pool.logits(task, fused, inputs())).mean() for task in pool.model_names).backward()
    router_params = {id(p) for router in routers for p in router.parameters()}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for router in routers for p in router.parameters())
    assert all(p.grad is None and not p.requires_grad for p in fused.parameters() if id(p) not in router_params)
    assert all(not b.requires_grad for b in fused.buffers())
    assert all(p.grad is None for task in pool.suite.tasks.values() for p in task.head.parameters())


def test_the_saved_structure_names_the_method_and_each_mixture_layer(tiny_modelpool, tmp_path):
    import json

    method = DepthUpscaling(layer_indices=[0, 1, 2, 3, 3, 4])
    method.save_fused(method.run(tiny_modelpool()), tmp_path)
    assert json.loads((tmp_path / STRUCTURE_FILE).read_text()) == {
        "format": "fusionbench-mixed", "version": 1, "method": "depth_upscaling",
        "layers": {"stack": "", "indices": [0, 1, 2, 3, 3, 4]}, "modules": []}
    method = SmileUpscaling(expert_rank=2)
    method.save_fused(method.run(tiny_modelpool(n_models=2)), tmp_path)
    modules = json.loads((tmp_path / STRUCTURE_FILE).read_text())["modules"]
    assert modules == [
        {"name": "0", "kind": "smile_linear", "config": {"in_features": 8, "out_features": 16, "experts": 2, "rank": 2,
                                                         "gate_rank": 1, "top_k": 1, "bias": True, "dtype": "float64"}},
        {"name": "3", "kind": "smile_linear", "config": {"in_features": 16, "out_features": 16, "experts": 2, "rank": 2,
                                                         "gate_rank": 1, "top_k": 1, "bias": True, "dtype": "float64"}},
    ]


def test_smile_reports_its_parameter_count_against_one_dense_model(tiny_modelpool):
    method = SmileUpscaling()
    method.run(tiny_modelpool())
    # Linear 8→16 at rank 8: 144 + gate 3·8 + U 3·16·8 + V 3·8·8 + Δb 3·16 = 792; Linear 16→16 at rank 16:
    # 272 + 48 + 768 + 768 + 48 = 1904; LayerNorm 32. One dense model: 144 + 272 + 32.
    assert method.cost["parameters"] == 792 + 1904 + 32
    assert method.cost["dense_parameters"] == 448
    assert method.cost["forward_passes"] == 0 and method.cost["adaptation_steps"] == 0


# -- architecture from the pool -------------------------------------------------------------------------


class ConvOnlyPool(TinyModelPool):
    """A tiny pool that declares its linear layers to be of a type its backbone does not have."""

    def architecture(self):
        return ArchitectureSpec(layers="", mlps=("0", "3"), linear_types=("Conv1D",))


class UndeclaredPool:
    """A model pool that says nothing about its architecture."""

    def __init__(self):
        self.inner = TinyModelPool()
        self.name = "undeclared"
        self.model_names = self.inner.model_names
        self.has_pretrained = True
        self.load_model, self.tensors = self.inner.load_model, self.inner.tensors
        self.build_model = self.inner.build_model


def test_a_layer_type_the_pool_does_not_declare_linear_is_named():
    with pytest.raises(ConfigError, match=r"^method 'smile' cannot handle layer type 'Linear' \('0'\)"):
        SmileUpscaling().run(ConvOnlyPool())


@pytest.mark.parametrize("name", ["smile", "depth_upscaling", "moe_upcycling"])
def test_a_pool_without_an_architecture_gets_one_line(name):
    cls, settings = METHODS[name]
    with pytest.raises(ConfigError, match=f"method '{name}' needs the model's architecture, but model pool "
                                          "'undeclared' declares none"):
        cls(**settings).run(UndeclaredPool())


# -- save and load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_saved_mixed_model_loads_back_bit_for_bit(name, tiny_modelpool, tmp_path):
    pool = tiny_modelpool()
    cls, settings = METHODS[name]
    method = cls(**settings)
    assert isinstance(method, SavesFusedModels)
    fused = method.run(pool)
    method.save_fused(fused, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.safetensors", STRUCTURE_FILE]
    loaded = cls.load_fused(tiny_modelpool(), tmp_path / "model")
    assert type(loaded) is type(fused) and loaded.state_dict().keys() == fused.state_dict().keys()
    assert torch.equal(loaded(inputs()), fused(inputs()))


@pytest.mark.parametrize("name", ["wemoe", "depth_upscaling"])
def test_fb_eval_of_a_saved_mixed_model_reproduces_the_run(name, fb_cli, tmp_path):
    extra = ["-s", "steps=2", "-s", "device=cpu"] if name == "wemoe" else ["-s", "layer_indices=[0,1,2,3,3,4]"]
    run = fb_cli("run", "-m", name, "-p", "tiny", "-o", str(tmp_path / "run"), "--save-model", "--json", *extra)
    assert run.exit_code == 0, run.stderr
    evaluated = fb_cli("eval", str(tmp_path / "run" / "model"), "-p", "tiny", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert next(iter(evaluated.json.values()))["tasks"] == run.json["tasks"]


# -- through fb ----------------------------------------------------------------------------------------------


def test_every_method_is_listed_with_its_requirement(fb_cli):
    rows = {row["name"]: row for row in fb_cli("methods", "--json").json}
    expected = {"smile": "data-free", "wemoe": "test-time", "sparse_wemoe": "test-time", "rankone_moe": "test-time",
                "depth_upscaling": "data-free", "moe_upcycling": "training"}
    assert {name: rows[name]["requirement"] for name in expected} == expected
    assert {entry.name for entry in get_host().registry("method").entries()
            if entry.distribution == "fusionbench-mixing"} == set(expected)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fb_run_on_tiny(name, fb_cli, tmp_path):
    extra = [arg for key, value in METHODS[name][1].items() for arg in ("-s", f"{key}={value}")]
    result = fb_cli("run", "-m", name, "-p", "tiny", "-o", str(tmp_path), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    cost = result.json["cost"]
    assert cost["parameters"] > cost["dense_parameters"] or name == "depth_upscaling"
    assert {"forward_passes", "backward_passes", "adaptation_steps", "parameter_ratio"} <= cost.keys()
    assert set(result.json["tasks"]) == {"task0", "task1", "task2"}
