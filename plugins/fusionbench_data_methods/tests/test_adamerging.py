"""AdaMerging: section C.13 invariants (0 steps = task arithmetic, λ in [0, 1], gradients reach only λ)."""

from __future__ import annotations

import pytest
import torch
from fusionbench_data_methods.coefficient_merger import build_merger, entropy
from fusionbench_data_methods.layer_wise_adamerging import LayerWiseAdaMerging
from fusionbench_data_methods.task_wise_adamerging import TaskWiseAdaMerging

from fusionbench_core import DataRequest

METHODS = [TaskWiseAdaMerging, LayerWiseAdaMerging]


def _task_arithmetic(pool, lam):
    base = pool.suite.pretrained.state_dict()
    models = [pool.suite.finetuned[n].state_dict() for n in pool.model_names]
    return {k: base[k] + lam * sum(m[k] - base[k] for m in models) for k in base}


@pytest.mark.parametrize("cls", METHODS)
def test_zero_steps_is_task_arithmetic_at_the_initial_lambda(cls, tiny_modelpool):
    pool = tiny_modelpool()
    method = cls(steps=0, device="cpu")
    state = method.run(pool).state_dict()
    for key, value in _task_arithmetic(pool, 0.3).items():
        torch.testing.assert_close(state[key], value)
    assert method.cost["forward_passes"] == 0 and method.cost["examples"] == 0
    assert torch.all(method.coefficients == 0.3)


@pytest.mark.parametrize("cls", METHODS)
def test_lambda_stays_in_the_unit_interval(cls, tiny_modelpool):
    method = cls(steps=25, lr=0.5, device="cpu")
    method.run(tiny_modelpool())
    lam = method.coefficients
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    assert ((lam == 0.0) | (lam == 1.0)).any()  # a large step hit a bound and was clamped there
    assert lam.shape == ((3, 6) if cls is LayerWiseAdaMerging else (3, 1))


def test_gradients_reach_only_lambda(tiny_modelpool):
    pool = tiny_modelpool()
    merger, tasks = build_merger(pool, torch.device("cpu"), layer_wise=True, init=0.3)
    request = DataRequest(split="test", examples=None, labelled=False)
    loss = sum(entropy(pool.logits(t, merger, next(pool.batches(t, request, batch_size=16))[0])).mean()
               for t in tasks)
    loss.backward()
    assert [name for name, p in merger.named_parameters()] == ["coefficients"]
    assert merger.coefficients.grad is not None and merger.coefficients.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in merger.backbone.parameters())
    assert all(not v.requires_grad for v in merger.task_vectors.values())
    assert all(p.grad is None for task in pool.suite.tasks.values() for p in task.head.parameters())


def test_merged_parameters_follow_the_layer_wise_formula(tiny_modelpool):
    pool = tiny_modelpool()
    merger, _ = build_merger(pool, torch.device("cpu"), layer_wise=True, init=0.3)
    with torch.no_grad():
        merger.coefficients.copy_(torch.rand(merger.coefficients.shape, generator=torch.Generator().manual_seed(0),
                                             dtype=torch.float64))
    merged = merger.merged_parameters()
    base = pool.suite.pretrained.state_dict()
    models = [pool.suite.finetuned[n].state_dict() for n in pool.model_names]
    for j, key in enumerate(merger.keys):
        expected = base[key] + sum(merger.coefficients[i, j] * (m[key] - base[key]) for i, m in enumerate(models))
        torch.testing.assert_close(merged[key], expected)
    x = pool.suite.tasks["task0"].x_test
    reference = pool.build_model({k: v.detach() for k, v in merged.items()})
    torch.testing.assert_close(merger(x), reference(x))


@pytest.mark.parametrize("cls", METHODS)
def test_training_lowers_the_test_entropy(cls, tiny_modelpool):
    pool = tiny_modelpool()

    def mean_entropy(model):
        with torch.no_grad():
            return sum(float(entropy(t.head(model(t.x_test))).mean()) for t in pool.suite.tasks.values())

    start = mean_entropy(cls(steps=0, device="cpu").run(pool))
    method = cls(steps=60, lr=1e-2, device="cpu")
    trained = mean_entropy(method.run(pool))
    assert trained < start
    assert method.cost["forward_passes"] == 60 * 3 * 16 == method.cost["backward_passes"]
    assert method.cost["examples"] == 3 * 64  # every test input of the 3 tasks was seen


def test_same_seed_same_bytes(tiny_modelpool):
    a = LayerWiseAdaMerging(steps=10, lr=1e-2, device="cpu").run(tiny_modelpool()).state_dict()
    b = LayerWiseAdaMerging(steps=10, lr=1e-2, device="cpu").run(tiny_modelpool()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _sharpening_pool(hand_pool):
    """θ₀ = 0 and two aligned task vectors: logits (λ₁ + 2λ₂)·Wx, so entropy falls as λ grows past 1."""
    from torch import nn

    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    pretrained = nn.Linear(3, 4).double()
    with torch.no_grad():
        pretrained.weight.zero_()
        pretrained.bias.zero_()
    models, data = {}, {}
    for name, scale in (("a", 1.0), ("b", 2.0)):
        model = nn.Linear(3, 4).double()
        with torch.no_grad():
            model.weight.copy_(scale * weight)
            model.bias.zero_()
        models[name] = model
        data[name] = (torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.zeros(8, dtype=torch.long))
    return hand_pool(models, data, pretrained=pretrained), weight


def _reference_lambdas(pool, weight, clamp, steps, lr):
    """Task-wise AdaMerging written out: Adam on λ, loss Σ_tasks mean entropy of x (λ₁W + 2λ₂W)ᵀ."""
    lam = torch.nn.Parameter(torch.full((2,), 0.3, dtype=torch.float64))
    optimiser = torch.optim.Adam([lam], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        used = lam.clamp(0.0, 1.0) if clamp == "forward" else lam
        merged = used[0] * weight + used[1] * 2.0 * weight
        loss = sum(entropy(pool.data[t][0] @ merged.T).mean() for t in ("a", "b"))
        loss.backward()
        optimiser.step()
        if clamp == "project":
            with torch.no_grad():
                lam.clamp_(0.0, 1.0)
    with torch.no_grad():
        return (lam.clamp(0.0, 1.0) if clamp == "forward" else lam).clone()


@pytest.mark.parametrize("clamp", ["none", "project", "forward"])
def test_lambda_leaving_the_unit_interval_under_each_clamp(clamp, hand_pool):
    pool, weight = _sharpening_pool(hand_pool)
    steps, lr = 40, 0.1
    method = TaskWiseAdaMerging(steps=steps, lr=lr, batch_size=8, clamp=clamp, device="cpu")
    state = method.run(pool).state_dict()
    lam = method.coefficients.reshape(-1)
    expected = _reference_lambdas(pool, weight, clamp, steps, lr)
    torch.testing.assert_close(lam, expected)
    if clamp == "none":
        assert lam.max() > 1.2  # left [0, 1] and kept going
    else:
        assert lam.max() == 1.0
    torch.testing.assert_close(state["weight"], lam[0] * weight + lam[1] * 2.0 * weight)


def test_forward_clamp_stops_the_gradient_outside_the_interval_and_projection_does_not(hand_pool):
    pool, _ = _sharpening_pool(hand_pool)
    request = DataRequest(split="test", examples=None, labelled=False)
    grads = {}
    for clamp in ("forward", "project", "none"):
        merger, tasks = build_merger(pool, torch.device("cpu"), layer_wise=False, init=0.3, clamp=clamp)
        with torch.no_grad():
            merger.coefficients.copy_(torch.tensor([[1.5], [0.5]], dtype=torch.float64))
        loss = sum(entropy(pool.logits(t, merger, next(pool.batches(t, request, batch_size=8))[0])).mean()
                   for t in tasks)
        loss.backward()
        grads[clamp] = merger.coefficients.grad.reshape(-1)
    assert grads["forward"][0] == 0 and grads["forward"][1] != 0
    assert grads["none"][0] != 0 and torch.equal(grads["project"], grads["none"])
