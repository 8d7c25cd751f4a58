"""Fisher merging: section C.6 invariants, the Fisher against its closed form, the cache and the CLI."""

from __future__ import annotations

import torch
from fusionbench_data_methods.fisher_merging import FisherMerging
from fusionbench_data_methods.fisher_statistics import fisher_weighted_state
from torch import nn

from fusionbench_core.engine.sources import StateDictSource

GEN = torch.Generator().manual_seed(0)
THETAS = [{"w": torch.randn(4, 3, generator=GEN, dtype=torch.float64),
           "b": torch.randn(3, generator=GEN, dtype=torch.float64)} for _ in range(3)]
F = {"w": torch.rand(4, 3, generator=GEN, dtype=torch.float64) + 0.1,
     "b": torch.rand(3, generator=GEN, dtype=torch.float64) + 0.1}
SOURCES = [StateDictSource(t) for t in THETAS]


def _merge(fishers, weights=(1.0, 1.0, 1.0), **kw):
    return fisher_weighted_state(SOURCES, ["w", "b"], fishers, list(weights), **kw)


def test_equal_fishers_give_the_average():
    merged = _merge([F, F, F])
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], sum(t[key] for t in THETAS) / 3)


def test_scaled_fishers_give_the_scaled_weighted_average():
    c = [1.0, 2.0, 5.0]
    merged = _merge([{k: ci * v for k, v in F.items()} for ci in c])
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], sum(ci * t[key] for ci, t in zip(c, THETAS)) / sum(c))


def test_one_hot_fisher_selects_that_model():
    zero = {k: torch.zeros_like(v) for k, v in F.items()}
    merged = _merge([zero, F, zero])
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], THETAS[1][key])


def test_scaling_every_fisher_changes_nothing():
    fishers = [{k: v * (i + 1) ** 2 for k, v in F.items()} for i in range(3)]
    merged = _merge(fishers)
    scaled = _merge([{k: 1e3 * v for k, v in f.items()} for f in fishers])
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], scaled[key])


def test_zero_denominator_falls_back_to_the_weighted_average():
    fishers = [{k: v.clone() for k, v in F.items()} for _ in range(3)]
    for f in fishers:
        f["w"][0, 0] = 0.0
    merged = _merge(fishers, weights=(1.0, 1.0, 2.0))
    assert torch.isfinite(merged["w"]).all()
    expected = (THETAS[0]["w"][0, 0] + THETAS[1]["w"][0, 0] + 2 * THETAS[2]["w"][0, 0]) / 4
    torch.testing.assert_close(merged["w"][0, 0], expected)


def test_fishers_that_do_not_name_the_models_tensors_are_an_error_not_an_average():
    import pytest
    from fusionbench_core.errors import ConfigError

    renamed = [{"prefix." + k: v for k, v in F.items()} for _ in range(3)]
    with pytest.raises(ConfigError, match="'prefix.w'"):
        _merge(renamed)
    with pytest.raises(ConfigError, match="'b' has a Fisher in some models but not in model 1"):
        _merge([F, {"w": F["w"]}, F])
    buffers_only = _merge([{"w": F["w"]}] * 3)  # a tensor in no Fisher (a buffer) is averaged
    torch.testing.assert_close(buffers_only["b"], sum(t["b"] for t in THETAS) / 3)


def test_normalize_equalises_the_models_fisher_scales():
    merged = _merge([{k: c * v for k, v in F.items()} for c in (1.0, 10.0, 100.0)], normalize=True)
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], sum(t[key] for t in THETAS) / 3)


def _softmax_regression_pool(hand_pool):
    gen = torch.Generator().manual_seed(1)
    models, data = {}, {}
    for name in ("a", "b"):
        layer = nn.Linear(3, 4).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(4, 3, generator=gen, dtype=torch.float64))
            layer.bias.copy_(torch.randn(4, generator=gen, dtype=torch.float64))
        models[name] = layer
        data[name] = (torch.randn(20, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (20,), generator=gen))
    return hand_pool(models, data)


def test_empirical_fisher_matches_the_softmax_regression_closed_form(hand_pool):
    # log p(y|x) = z_y − logsumexp(z), z = Wx + b: ∇_W = (e_y − p) xᵀ, ∇_b = e_y − p
    pool = _softmax_regression_pool(hand_pool)
    method = FisherMerging(examples=12, cache=False)
    method.run(pool)
    from fusionbench_data_methods.data_access import CostMeter
    from fusionbench_data_methods.fisher_statistics import diagonal_fisher

    batches = [(x[None], y[None]) for x, y in zip(*pool.data["a"])][:12]
    fisher = diagonal_fisher(pool, "a", batches, empirical=True, seed=0, meter=CostMeter(), method="t")
    model = pool.models["a"]
    grad_w, grad_b = torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for x, y in batches:
        residual = nn.functional.one_hot(y, 4).double()[0] - torch.softmax(model(x), -1)[0].detach()
        grad_w += (residual[:, None] * x[0][None, :]) ** 2
        grad_b += residual**2
    torch.testing.assert_close(fisher["weight"], grad_w / 12)
    torch.testing.assert_close(fisher["bias"], grad_b / 12)
    assert method.cost["examples"] == 24
    assert method.cost["forward_passes"] == 24 and method.cost["backward_passes"] == 24


def test_true_fisher_is_seeded_and_differs_from_empirical(tiny_modelpool):
    pool = tiny_modelpool()
    states = []
    for seed in (0, 0, 1):
        method = FisherMerging(fisher_type="true", examples=32, cache=False)
        method.seed = seed
        states.append(method.run(pool).state_dict())
    empirical = FisherMerging(examples=32, cache=False).run(pool).state_dict()
    key = "0.weight"
    assert torch.equal(states[0][key], states[1][key])
    assert not torch.equal(states[0][key], states[2][key])
    assert not torch.equal(states[0][key], empirical[key])


def test_identical_models_merge_to_the_model(hand_pool):
    pool = _softmax_regression_pool(hand_pool)
    copies = hand_pool({name: pool.models["a"] for name in ("a", "b")}, pool.data)
    merged = FisherMerging(examples=16, cache=False).run(copies)
    for key, value in pool.models["a"].state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value)


def test_fishers_are_cached_so_a_second_run_does_no_passes(tiny_modelpool):
    first_pool, second_pool = tiny_modelpool(), tiny_modelpool()
    first_pool.forward_passes = second_pool.forward_passes = 0
    first = FisherMerging(examples=32)
    merged_first = first.run(first_pool)
    second = FisherMerging(examples=32, model_weights=[1, 1, 1])
    merged_second = second.run(second_pool)
    assert first.cost["backward_passes"] == 96 and first.cost["statistics_cache_hits"] == 0
    assert second.cost["forward_passes"] == 0 and second.cost["backward_passes"] == 0
    assert second.cost["statistics_cache_hits"] == 3 and second_pool.forward_passes == 0
    for key, value in merged_first.state_dict().items():
        assert torch.equal(value, merged_second.state_dict()[key])
    third = FisherMerging(examples=16)
    third.run(tiny_modelpool())
    assert third.cost["statistics_cache_hits"] == 0  # other data, other key


def test_fisher_merging_through_the_cli(fb_cli, tmp_path):
    result = fb_cli("run", "-m", "fisher_merging", "-p", "tiny", "--json", "-s", "examples=20",
                    "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    cost = result.json["cost"]
    assert cost["examples"] == 60 and cost["forward_passes"] == 60 and cost["backward_passes"] == 60
    assert 0 < cost["wall_s"] < 600 and cost["peak_rss_mb"] > 0
    bad = fb_cli("run", "-m", "fisher_merging", "-p", "tiny", "--json", "-s", "fisher_type=gold",
                 "-o", str(tmp_path / "bad"))
    assert bad.exit_code == 1 and "fisher_type" in bad.stderr + bad.stdout


def _upstream_statistic(model, x, batch):
    """Upstream's batched term by hand: per batch, g_b = √p_b − p_b·Σ_c √p_bc is ∂(Σ_c √p_bc log p_bc)/∂z_b;
    the squared batch gradients of W (Σ_b g_b x_bᵀ) and b (Σ_b g_b), summed, over the number of examples."""
    with torch.no_grad():
        p = torch.softmax(model(x), -1)
    g = p.sqrt() - p * p.sqrt().sum(-1, keepdim=True)
    fw, fb = torch.zeros_like(model.weight), torch.zeros_like(model.bias)
    for start in range(0, len(x), batch):
        gb, xb = g[start:start + batch], x[start:start + batch]
        fw += (gb.T @ xb) ** 2
        fb += gb.sum(0) ** 2
    return {"weight": fw / len(x), "bias": fb / len(x)}


def test_upstream_statistic_with_normalize_and_floor_matches_the_hand_computed_merge(hand_pool):
    pool = _softmax_regression_pool(hand_pool)
    examples, batch, eps = 20, 5, 1e-6
    method = FisherMerging(fisher_statistic="upstream", batch_size=batch, normalize=True, min_fisher=eps,
                           examples=examples, cache=False)
    merged = method.run(pool).state_dict()
    assert method.cost["backward_passes"] == 2 * examples
    fishers = {name: _upstream_statistic(pool.models[name], pool.data[name][0][:examples], batch)
               for name in pool.models}
    from fusionbench_data_methods.data_access import CostMeter
    from fusionbench_data_methods.fisher_statistics import diagonal_fisher

    from fusionbench_core import DataRequest

    batches = list(pool.batches("a", DataRequest(split="train", examples=examples, labelled=False), batch_size=batch))
    computed = diagonal_fisher(pool, "a", batches, empirical=True, seed=0, meter=CostMeter(), method="t",
                               statistic="upstream")
    for key in ("weight", "bias"):
        torch.testing.assert_close(computed[key], fishers["a"][key])
    # upstream: weights 1/(‖F_i‖ + ε), every entry F + ε
    scale = {name: 1.0 / (torch.sqrt(sum(f.square().sum() for f in fisher.values())) + eps)
             for name, fisher in fishers.items()}
    for key in ("weight", "bias"):
        num = sum(scale[n] * (fishers[n][key] + eps) * pool.models[n].state_dict()[key] for n in pool.models)
        den = sum(scale[n] * (fishers[n][key] + eps) for n in pool.models)
        torch.testing.assert_close(merged[key], num / den)
    exact = FisherMerging(examples=examples, cache=False).run(pool).state_dict()
    assert not torch.allclose(exact["weight"], merged["weight"])


def test_the_floor_keeps_parameters_no_example_moves_finite_and_averaged():
    zero = {k: torch.zeros_like(v) for k, v in F.items()}
    merged = _merge([zero, zero, zero], weights=(1.0, 1.0, 2.0), min_fisher=1e-6)
    expected = (THETAS[0]["w"] + THETAS[1]["w"] + 2 * THETAS[2]["w"]) / 4
    torch.testing.assert_close(merged["w"], expected)


def test_upstream_statistic_takes_no_sampled_labels():
    import pytest
    from fusionbench_core.errors import ConfigError

    with pytest.raises(ConfigError, match="fisher_type=true"):
        FisherMerging(fisher_statistic="upstream", fisher_type="true")
