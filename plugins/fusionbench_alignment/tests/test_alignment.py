"""Invariants C.10 and C.14 on float64 MLPs: permutation symmetry, exact recovery, barriers."""

from __future__ import annotations

import pytest
import torch

from fusionbench_core.errors import ConfigError
from fusionbench_alignment.activation_matching import ActivationMatching
from fusionbench_alignment.common import model_state
from fusionbench_alignment.connect import barriers, evaluate, fit_bezier, curve_path, linear_path
from fusionbench_alignment.ot_fusion import OTFusion
from fusionbench_alignment.spec import PermutationSpec, invert, permute_state, random_permutations
from fusionbench_alignment.weight_matching import WeightMatching, match_weights, objective
from fusionbench_alignment.zipit import ZipIt

from fusionbench_alignment.testing import ToyPool, build_mlp, mlp, mlp_spec, trained_mlp

X = torch.randn(64, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def permuted_copy(model, seed=1):
    spec = PermutationSpec.from_data(mlp_spec(model))
    state = model_state(model)
    perms = random_permutations(spec, state, seed)
    return spec, perms, build_mlp(permute_state(spec, state, perms))


def assert_same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0)


def test_permuted_copy_computes_the_same_function():
    model = mlp(0)
    _, perms, copy = permuted_copy(model)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert not torch.equal(copy[0].weight, model[0].weight)
    torch.testing.assert_close(copy(X), model(X), atol=1e-12, rtol=0)


def test_weight_matching_recovers_the_permutation_exactly():
    model = mlp(0)
    spec, perms, copy = permuted_copy(model, seed=3)
    state_a, state_b = model_state(model), model_state(copy)
    history = []
    found = match_weights(spec, state_a, state_b, seed=0, history=history)
    maximum = sum(float((t.to(torch.float64) ** 2).sum()) for k, t in state_a.items() if k in spec.axes_by_key())
    assert history[-1] == pytest.approx(maximum, rel=1e-12)
    assert all(b >= a for a, b in zip(history, history[1:]))
    assert_same_state(permute_state(spec, state_b, found), state_a)
    for name in perms:
        assert torch.equal(found[name], invert(perms)[name])


def test_weight_matching_objective_never_decreases_between_independent_models():
    a, b = model_state(mlp(0, (40, 40))), model_state(mlp(7, (40, 40)))
    spec = PermutationSpec.from_data(mlp_spec(mlp(0, (40, 40))))
    history = []
    perms = match_weights(spec, a, b, seed=2, history=history)
    assert len(history) > 3
    assert all(later >= earlier for earlier, later in zip(history, history[1:]))
    assert history[-1] > history[0]
    assert objective(spec, a, b, perms) == pytest.approx(history[-1])


@pytest.mark.parametrize("method", [WeightMatching(), ActivationMatching(), OTFusion(solver="emd")],
                         ids=["weight_matching", "activation_matching", "ot_fusion"])
def test_merging_a_model_with_its_permuted_copy_returns_the_model(toy_pool, method):
    model = mlp(0)
    _, _, copy = permuted_copy(model, seed=4)
    merged = method.run(toy_pool({"a": model, "b": copy}))
    assert_same_state(model_state(merged), model_state(model), atol=1e-12)


def test_ot_sinkhorn_gives_a_soft_but_close_alignment(toy_pool):
    model = mlp(0)
    _, _, copy = permuted_copy(model, seed=4)
    merged = OTFusion(solver="sinkhorn", reg=0.001).run(toy_pool({"a": model, "b": copy}))
    torch.testing.assert_close(merged(X), model(X), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("zip_layers", [-1, 1])
def test_zipit_of_a_model_with_its_permuted_copy_computes_the_model(toy_pool, zip_layers):
    model = mlp(0)
    _, _, copy = permuted_copy(model, seed=6)
    merged = ZipIt(zip_layers=zip_layers).run(toy_pool({"a": model, "b": copy}))
    widths = [merged[0].out_features, merged[2].out_features]
    assert widths == ([12, 10] if zip_layers == -1 else [12, 20])
    torch.testing.assert_close(merged(X), model(X), atol=1e-9, rtol=0)


def test_zipit_needs_two_models(toy_pool):
    with pytest.raises(ConfigError, match="exactly 2 models"):
        ZipIt().run(toy_pool({"a": mlp(0), "b": mlp(1), "c": mlp(2)}))


def test_then_hands_the_aligned_models_to_another_method(toy_pool):
    pool = toy_pool({"a": mlp(0), "b": mlp(1)})
    plain = WeightMatching().run(pool)
    chained = WeightMatching(then="simple_average").run(pool)
    assert_same_state(model_state(chained), model_state(plain), atol=1e-12)


def test_a_model_without_a_spec_gets_one_line_naming_its_architecture():
    from fusionbench_core.tiny import TinyModelPool

    with pytest.raises(ConfigError, match=r"no permutation spec for architecture 'Sequential' \(model pool 'tiny'\)"):
        WeightMatching().run(TinyModelPool())


@pytest.fixture(scope="module")
def trained_pair():
    """Two MLPs from different inits trained on the toy task, and their pool."""
    data = ToyPool({})
    models = {"a": trained_mlp(0, data), "b": trained_mlp(1, data)}
    return ToyPool(models), model_state(models["a"]), model_state(models["b"])


def test_barrier_of_a_model_with_itself_is_zero_and_the_barrier_is_symmetric(trained_pair):
    pool, a, b = trained_pair
    same = linear_path(pool, a, a, "t")
    assert same["loss_barrier"] == pytest.approx(0.0, abs=1e-12)
    assert same["error_barrier"] == pytest.approx(0.0, abs=1e-12)
    ab, ba = linear_path(pool, a, b, "t"), linear_path(pool, b, a, "t")
    assert ab["loss_barrier"] == ba["loss_barrier"] and ab["error_barrier"] == ba["error_barrier"]
    assert ab["loss"] == ba["loss"][::-1]
    assert ab["loss_barrier"] > 0


def test_path_endpoints_reproduce_each_models_loss(trained_pair):
    pool, a, b = trained_pair
    path = linear_path(pool, a, b, "t", points=25)
    assert len(path["alpha"]) == 25 and path["alpha"][0] == 0.0 and path["alpha"][-1] == 1.0
    assert path["loss"][0] == evaluate(pool.load_model("a"), pool, "t")["loss"]
    assert path["loss"][-1] == evaluate(pool.load_model("b"), pool, "t")["loss"]


def test_barrier_definitions_by_hand():
    result = barriers([0.0, 0.5, 1.0], [1.0, 3.0, 2.0], [0.1, 0.5, 0.3])
    assert result["loss_barrier"] == pytest.approx(3.0 - 1.5)
    assert result["error_barrier"] == pytest.approx(0.5 - 0.2)


def test_bezier_curve_keeps_the_endpoints_and_lowers_the_barrier(trained_pair):
    pool, a, b = trained_pair
    control = fit_bezier(pool, a, b, "t", steps=150, lr=0.05, batch_size=64)
    curve, line = curve_path(pool, a, b, control, "t", points=9), linear_path(pool, a, b, "t", points=9)
    assert curve["loss"][0] == line["loss"][0] and curve["loss"][-1] == line["loss"][-1]
    assert curve["loss_barrier"] < line["loss_barrier"]


def test_barrier_after_weight_matching_a_permuted_copy_is_zero(trained_pair):
    pool, a, _ = trained_pair
    model = pool.load_model("a")
    spec, _, copy = permuted_copy(model, seed=8)
    raw = linear_path(pool, a, model_state(copy), "t", points=9)
    aligned = WeightMatching().align(spec, pool, "a", model, "b", copy)
    after = linear_path(pool, a, aligned, "t", points=9)
    assert raw["loss_barrier"] > 0.01
    assert after["loss_barrier"] == pytest.approx(0.0, abs=1e-12)
