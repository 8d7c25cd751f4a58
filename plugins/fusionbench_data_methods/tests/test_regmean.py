"""RegMean, RegMean++ and MaTS: section C.7 invariants, hand-computed Grams, the cache and the CLI."""

from __future__ import annotations

import copy

import pytest
import torch
from fusionbench_core.tiny import TinyModelPool, TinySuite
from fusionbench_data_methods.linear_statistics import conjugate_gradient, normal_equations, regmean_solve
from fusionbench_data_methods.mats import MaTS
from fusionbench_data_methods.regmean import RegMean
from fusionbench_data_methods.regmean_plusplus import RegMeanPlusPlus
from torch import nn

GEN = torch.Generator().manual_seed(0)
WEIGHTS = [torch.randn(5, 4, generator=GEN, dtype=torch.float64) for _ in range(3)]  # (out, in)


def _spd(seed, n=4):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(3 * n, n, generator=gen, dtype=torch.float64)
    return a.T @ a / (3 * n)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_identity_or_equal_grams_give_the_average(alpha):
    mean = sum(WEIGHTS) / 3
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(regmean_solve([eye] * 3, WEIGHTS, alpha), mean)
    torch.testing.assert_close(regmean_solve([_spd(1)] * 3, WEIGHTS, alpha), mean)


def test_scaled_identity_grams_give_the_weighted_average():
    c = [1.0, 3.0, 6.0]
    grams = [ci * torch.eye(4, dtype=torch.float64) for ci in c]
    torch.testing.assert_close(regmean_solve(grams, WEIGHTS, 0.7), sum(ci * w for ci, w in zip(c, WEIGHTS)) / 10)


def test_alpha_zero_weights_each_input_feature_by_its_variance():
    grams = [_spd(seed) for seed in (1, 2, 3)]
    merged = regmean_solve(grams, WEIGHTS, 0.0)
    diag = [torch.diagonal(g) for g in grams]  # one weight per input feature = column of W
    expected = sum(d[None, :] * w for d, w in zip(diag, WEIGHTS)) / sum(diag)[None, :]
    torch.testing.assert_close(merged, expected)


def test_single_model_and_closed_form_solution():
    gram = _spd(4)
    torch.testing.assert_close(regmean_solve([gram], WEIGHTS[:1], 0.9), WEIGHTS[0])
    grams = [_spd(seed) for seed in (5, 6, 7)]
    merged = regmean_solve(grams, WEIGHTS, 1.0)
    # the normal equations (Σ G_i) W*ᵀ = Σ G_i W_iᵀ hold
    torch.testing.assert_close(sum(grams) @ merged.T, sum(g @ w.T for g, w in zip(grams, WEIGHTS)))


def test_singular_system_keeps_the_average_in_unconstrained_directions():
    gram = _spd(8)
    gram[:, 3] = 0.0
    gram[3, :] = 0.0
    merged = regmean_solve([gram, gram, gram], WEIGHTS, 1.0)
    torch.testing.assert_close(merged, sum(WEIGHTS) / 3)


def test_conjugate_gradient_reaches_the_closed_form():
    grams = [_spd(seed) for seed in (9, 10, 11)]
    lhs, rhs, mean = normal_equations(grams, WEIGHTS, 0.8)
    solved = conjugate_gradient(lhs, rhs, mean.clone(), iterations=12).T
    torch.testing.assert_close(solved, regmean_solve(grams, WEIGHTS, 0.8), rtol=1e-9, atol=1e-9)
    assert torch.equal(conjugate_gradient(lhs, rhs, mean, iterations=0), mean)


def _first_layer_grams(pool, examples):
    return [pool.suite.tasks[n].x_train[:examples].T @ pool.suite.tasks[n].x_train[:examples] / examples
            for n in pool.model_names]


def test_regmean_on_the_tiny_pool_matches_hand_computed_grams(tiny_modelpool):
    pool = tiny_modelpool()
    method = RegMean(alpha=0.8, examples=64, batch_size=20)
    state = method.run(pool).state_dict()
    models = [pool.suite.finetuned[n].state_dict() for n in pool.model_names]
    # the first linear's inputs are the raw task inputs
    expected = regmean_solve(_first_layer_grams(pool, 64), [m["0.weight"] for m in models], 0.8)
    torch.testing.assert_close(state["0.weight"], expected)
    for key in ("0.bias", "2.weight", "2.bias", "3.bias"):  # no statistics: plain mean
        torch.testing.assert_close(state[key], sum(m[key] for m in models) / 3)
    assert method.cost["examples"] == 192 and method.cost["forward_passes"] == 192
    assert method.cost["backward_passes"] == 0 and method.cost["linear_layers"] == 2


def test_regmean_of_one_model_is_that_model(tiny_modelpool):
    pool = tiny_modelpool(n_models=1)
    for method in (RegMean(examples=32), RegMeanPlusPlus(examples=32)):
        state = method.run(pool).state_dict()
        for key, value in pool.suite.finetuned["task0"].state_dict().items():
            torch.testing.assert_close(state[key], value)


def test_grams_are_cached_so_an_alpha_sweep_computes_them_once(tiny_modelpool):
    first = RegMean(alpha=0.95, examples=64)
    first.run(tiny_modelpool())
    pool = tiny_modelpool()
    pool.forward_passes = 0
    second = RegMean(alpha=0.5, examples=64)
    cached = second.run(pool).state_dict()
    assert second.cost["forward_passes"] == 0 and pool.forward_passes == 0
    assert second.cost["statistics_cache_hits"] == 3
    fresh = RegMean(alpha=0.5, examples=64, cache=False).run(tiny_modelpool()).state_dict()
    for key, value in fresh.items():
        assert torch.equal(value, cached[key])
    mats = MaTS(examples=64)
    mats.run(tiny_modelpool())
    assert mats.cost["statistics_cache_hits"] == 3 and mats.cost["forward_passes"] == 0


def test_mats_converges_to_regmean_and_starts_from_task_arithmetic(tiny_modelpool):
    pool = tiny_modelpool()
    closed = RegMean(alpha=0.9, examples=64).run(pool).state_dict()
    converged = MaTS(alpha=0.9, examples=64, iterations=200).run(pool).state_dict()
    for key, value in closed.items():
        torch.testing.assert_close(converged[key], value, rtol=1e-7, atol=1e-7)
    start = MaTS(examples=64, iterations=0, init_scaling_factor=0.4).run(pool).state_dict()
    base = pool.suite.pretrained.state_dict()
    models = [pool.suite.finetuned[n].state_dict() for n in pool.model_names]
    ta = base["3.weight"] + 0.4 * sum(m["3.weight"] - base["3.weight"] for m in models)
    torch.testing.assert_close(start["3.weight"], ta)
    torch.testing.assert_close(start["3.bias"], sum(m["3.bias"] for m in models) / 3)


def test_regmean_plusplus_takes_later_grams_from_the_merged_model(tiny_modelpool):
    pool = tiny_modelpool()
    alpha = 0.9
    method = RegMeanPlusPlus(alpha=alpha, examples=48, batch_size=16)
    state = method.run(pool).state_dict()
    models = [pool.suite.finetuned[n].state_dict() for n in pool.model_names]
    first = regmean_solve(_first_layer_grams(pool, 48), [m["0.weight"] for m in models], alpha)
    torch.testing.assert_close(state["0.weight"], first)
    # inputs of the second linear: LayerNorm(tanh(first linear)), with the merged first linear and norm
    lower = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.LayerNorm(16)).double()
    lower.load_state_dict({"0.weight": first, "0.bias": sum(m["0.bias"] for m in models) / 3,
                           "2.weight": sum(m["2.weight"] for m in models) / 3,
                           "2.bias": sum(m["2.bias"] for m in models) / 3})
    grams = []
    with torch.no_grad():
        for name in pool.model_names:
            h = lower(pool.suite.tasks[name].x_train[:48])
            grams.append(h.T @ h / 48)
    expected = regmean_solve(grams, [m["3.weight"] for m in models], alpha)
    torch.testing.assert_close(state["3.weight"], expected)
    regmean = RegMean(alpha=alpha, examples=48).run(tiny_modelpool()).state_dict()
    assert not torch.allclose(regmean["3.weight"], expected)  # RegMean's Grams differ for the second layer
    assert method.cost["layer_groups"] == 2 and method.cost["examples"] == 144


def test_regmean_alpha_out_of_range_is_a_one_line_error(fb_cli, tmp_path):
    result = fb_cli("run", "-m", "regmean", "-p", "tiny", "--json", "-s", "alpha=2", "-o", str(tmp_path / "r"))
    assert result.exit_code == 1 and "alpha" in result.stderr + result.stdout


class InputMajorLinear(nn.Module):
    """``y = x W + b`` with ``W`` stored ``(in, out)`` and ``nf`` output features, as transformers' ``Conv1D``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.zeros(nx, nf, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(nf, dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight + self.bias


def _transformers_conv1d(nf: int, nx: int) -> nn.Module:
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    return conv1d(nf, nx).double()


def _input_major(model: nn.Sequential, make_layer) -> nn.Sequential:
    """A copy of the tiny backbone whose ``nn.Linear`` layers store their weights input-major."""
    model = copy.deepcopy(model)
    for index, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            replacement = make_layer(layer.out_features, layer.in_features)
            with torch.no_grad():
                replacement.weight.copy_(layer.weight.T)
                replacement.bias.copy_(layer.bias)
            model[index] = replacement.requires_grad_(False)
    return model


class InputMajorPool(TinyModelPool):
    """The tiny pool with every backbone linear stored input-major (GPT-2's layout)."""

    def __init__(self, make_layer):
        super().__init__("tiny-input-major")
        suite = self.suite
        self.suite = TinySuite(_input_major(suite.pretrained, make_layer),
                               {name: _input_major(model, make_layer) for name, model in suite.finetuned.items()},
                               suite.tasks)


@pytest.mark.parametrize("make_layer", [InputMajorLinear, _transformers_conv1d], ids=["duck-typed", "transformers"])
@pytest.mark.parametrize("method", [lambda: RegMean(alpha=0.8, examples=64),
                                    lambda: MaTS(alpha=0.8, examples=64, iterations=3),
                                    lambda: RegMeanPlusPlus(alpha=0.8, examples=64)],
                         ids=["regmean", "mats", "regmean_plusplus"])
def test_conv1d_layers_merge_like_the_same_nn_linear_layers(tiny_modelpool, make_layer, method):
    linear = method().run(tiny_modelpool()).state_dict()
    pool = InputMajorPool(make_layer)
    algorithm = method()
    merged = algorithm.run(pool).state_dict()
    assert algorithm.cost["forward_passes"] > 0
    for key, value in linear.items():
        expected = value.T if key in ("0.weight", "3.weight") else value
        torch.testing.assert_close(merged[key], expected, rtol=1e-9, atol=1e-10)
        assert merged[key].is_contiguous()


class _Block(nn.Module):
    """A LayerNorm then a linear layer: the norm runs before the block's first linear."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(self.fc(self.norm(x)))


class _TwoBlocks(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.blocks = nn.ModuleList([_Block(width), _Block(width)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _gram(x):
    return x.T @ x / x.shape[0]


def _solve(grams, weights):
    """RegMean at α = 1 in float64, written out: W* = ((Σ G_i)⁻¹ Σ G_i W_iᵀ)ᵀ."""
    return torch.linalg.solve(sum(grams), sum(g @ w.T for g, w in zip(grams, weights))).T


def test_regmean_plusplus_takes_each_blocks_grams_with_the_models_own_block(hand_pool):
    width, n = 4, 30
    gen = torch.Generator().manual_seed(3)
    models, data = {}, {}
    for name in ("a", "b", "c"):
        model = _TwoBlocks(width).double()
        with torch.no_grad():
            for param in model.parameters():  # the norms differ between models too
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64))
        models[name] = model
        data[name] = (torch.randn(n, width, generator=gen, dtype=torch.float64), torch.zeros(n, dtype=torch.long))
    merged = RegMeanPlusPlus(alpha=1.0, examples=n, batch_size=7).run(hand_pool(models, data)).state_dict()

    states = [models[name].state_dict() for name in models]
    inputs = [data[name][0] for name in models]

    def mean(key):
        return sum(s[key] for s in states) / len(states)

    def block(index, fc_weight, fc_bias, norm_weight, norm_bias, x):
        h = nn.functional.layer_norm(x, (width,), norm_weight, norm_bias)
        return torch.tanh(h @ fc_weight.T + fc_bias)

    def own_norm(index, state, x):
        p = f"blocks.{index}.norm."
        return nn.functional.layer_norm(x, (width,), state[p + "weight"], state[p + "bias"])

    # block 0: each model's own norm on its own inputs (nothing before the block is shared)
    w0 = _solve([_gram(own_norm(0, s, x)) for s, x in zip(states, inputs)], [s["blocks.0.fc.weight"] for s in states])
    # block 1: the merged block 0 (RegMean weight, averaged bias and norm), then each model's own norm
    lower = [block(0, w0, mean("blocks.0.fc.bias"), mean("blocks.0.norm.weight"), mean("blocks.0.norm.bias"), x)
             for x in inputs]
    w1 = _solve([_gram(own_norm(1, s, h)) for s, h in zip(states, lower)], [s["blocks.1.fc.weight"] for s in states])
    torch.testing.assert_close(merged["blocks.0.fc.weight"], w0)
    torch.testing.assert_close(merged["blocks.1.fc.weight"], w1)
    for key in ("blocks.0.norm.weight", "blocks.1.norm.bias", "blocks.1.fc.bias"):
        torch.testing.assert_close(merged[key], mean(key))

    # the superseded reading (Grams after merging the block's own norm) gives other weights
    merged_norm = [nn.functional.layer_norm(x, (width,), mean("blocks.0.norm.weight"), mean("blocks.0.norm.bias"))
                   for x in inputs]
    w0_old = _solve([_gram(h) for h in merged_norm], [s["blocks.0.fc.weight"] for s in states])
    assert (w0_old - w0).abs().max() > 1e-3
