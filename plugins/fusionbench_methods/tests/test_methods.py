"""Every data-free method against hand-computed values and the invariants of methods.md section C."""

from __future__ import annotations

import math

import pytest
import torch

from fusionbench_core.config import ComponentSpec
from fusionbench_core.engine.sources import StateDictSource
from fusionbench_core.engine.tensorwise import merge_sources
from fusionbench_core.engine.writer import StateDictSink
from fusionbench_core.errors import ConfigError
from fusionbench_core.plugins import get_host
from fusionbench_core.run import instantiate

D = torch.float64


def method(name: str, seed: int = 0, **settings):
    algorithm = instantiate(get_host(), "method", ComponentSpec(name, settings))
    algorithm.seed = seed
    return algorithm


def merge(name, pretrained, models, *, seed=0, chunk=None, **settings):
    """Merge float64 state dicts (or single tensors, stored under key 'w') in memory."""
    wrap = lambda sd: StateDictSource(sd if isinstance(sd, dict) else {"w": sd})  # noqa: E731
    sink = StateDictSink()
    merge_sources(method(name, seed, **settings), wrap(pretrained) if pretrained is not None else None,
                  [wrap(m) for m in models], sink=sink, chunk_elements=chunk)
    single = not isinstance(models[0], dict)
    return sink.state["w"] if single else sink.state


def t(*values):
    return torch.tensor(values, dtype=D)


def random_state(seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(6, 5, generator=gen, dtype=D) * scale,
            "a.bias": torch.randn(6, generator=gen, dtype=D) * scale,
            "b.weight": torch.randn(4, 6, generator=gen, dtype=D) * scale}


def finetuned(base, seed, scale=0.1):
    return {k: v + scale * random_state(seed)[k] for k, v in base.items()}


BASE = random_state(100)
MODELS = [finetuned(BASE, i) for i in range(3)]
DISTRIBUTION = "fusionbench-methods"
ALL_METHODS = sorted(entry.name for entry in get_host().registry("method").entries()
                     if entry.distribution == DISTRIBUTION)
"""Every method this distribution registers: a new one is tested without editing this file."""


def close(a, b, tol=1e-10):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    return torch.allclose(a, b, atol=tol, rtol=0)


# -- hygiene -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_keeps_keys_shapes_dtypes_and_is_deterministic(name):
    models = MODELS[:2] if name == "slerp" else MODELS
    first = merge(name, BASE, models, seed=3)
    assert first.keys() == BASE.keys()
    assert all(first[k].shape == BASE[k].shape and first[k].dtype == D for k in BASE)
    assert all(torch.isfinite(v).all() for v in first.values())
    assert close(first, merge(name, BASE, models, seed=3), 0)


# -- averages and interpolation ----------------------------------------------------------------


def test_simple_and_weighted_average_hand_values():
    assert close(merge("simple_average", None, [t(1, 2), t(3, 8)]), t(2, 5))
    assert close(merge("weighted_average", None, [t(0, 4), t(4, 0)], weights=[1, 3]), t(3, 1))
    assert close(merge("weighted_average", None, [t(0, 4), t(4, 0)], weights=[1, 3], normalize=False), t(12, 4))
    assert close(merge("weighted_average", None, MODELS), merge("simple_average", None, MODELS))
    with pytest.raises(ConfigError, match="weights"):
        merge("weighted_average", None, [t(1), t(2)], weights=[1, 2, 3])


@pytest.mark.parametrize("name", ["simple_average", "weighted_average", "model_stock", "slerp"])
def test_identity_merge(name):
    copies = [MODELS[0]] * (2 if name == "slerp" else 3)
    assert close(merge(name, BASE, copies), MODELS[0], 1e-12)


def test_linear_interpolation_and_expo():
    assert close(merge("linear_interpolation", t(1, 1), [t(3, -1)], t=0), t(1, 1))
    assert close(merge("linear_interpolation", t(1, 1), [t(3, -1)], t=1), t(3, -1))
    assert close(merge("linear_interpolation", t(1, 1), [t(3, -1)], t=1.5), t(4, -2))  # ExPO: past the endpoint
    assert close(merge("linear_interpolation", None, [t(0, 8), t(4, 0)], t=0.25), t(1, 6))
    with pytest.raises(ConfigError, match="exactly 2"):
        merge("linear_interpolation", None, [t(0), t(1), t(2)])


# -- task arithmetic -----------------------------------------------------------------------------


def test_task_arithmetic_invariants():
    assert close(merge("task_arithmetic", BASE, MODELS, scaling_factor=0.0), BASE, 0)
    single = merge("task_arithmetic", BASE, MODELS[:1], scaling_factor=1.0)
    assert all(torch.equal(single[k], MODELS[0][k]) for k in BASE)  # exact in float64
    assert close(merge("task_arithmetic", BASE, MODELS, scaling_factor=1 / 3), merge("simple_average", None, MODELS))
    at = {lam: merge("task_arithmetic", BASE, MODELS, scaling_factor=lam) for lam in (0.2, 0.5, 0.8)}
    assert close({k: (at[0.2][k] + at[0.8][k]) / 2 for k in BASE}, at[0.5])  # linear in λ
    assert close(merge("task_arithmetic", t(1, 2), [t(3, 1)], scaling_factor=-1), t(-1, 3))  # negation
    assert close(merge("task_arithmetic", t(1, 2), [t(3, 1), t(0, 2)], scaling_factor=0.5), t(1.5, 1.5))


# -- TIES ------------------------------------------------------------------------------------------


def test_ties_hand_example_per_tensor_trim():
    base = t(0, 0, 0, 0, 0, 0)
    tau1 = t(3, -1, 2, 0.5, 1, -2)   # top 3 by |.|: 3, 2, -2
    tau2 = t(-2, -4, 1, 0.1, 1, 3)   # top 3: -4, 3, -2
    tau3 = t(1, 2, -3, 0.2, 1, 0.5)  # top 3: -3, 2, 1 (index 0 before index 4 among the tied 1s)
    # trimmed: t1 = [3,0,2,0,0,-2]  t2 = [-2,-4,0,0,0,3]  t3 = [1,2,-3,0,0,0]
    # sums [2,-2,-1,0,0,1] → signs [+,-,-,0,0,+]
    # disjoint sum: [3+1, -4, -3, 0, 0, 3];  counts [2,1,1,0,0,1] → mean [2, -4, -3, 0, 0, 3]
    for trim in ("tensor", "global"):
        got_sum = merge("ties", base, [tau1, tau2, tau3], density=0.5, trim=trim, scaling_factor=1.0)
        assert close(got_sum, t(4, -4, -3, 0, 0, 3)), trim
        got_mean = merge("ties", base, [tau1, tau2, tau3], density=0.5, trim=trim, merge_func="mean",
                         scaling_factor=0.5)
        assert close(got_mean, 0.5 * t(2, -4, -3, 0, 0, 3)), trim
    # by frequency at index 2: one +, one - after trimming? t1:+2, t3:-3 → tie → count election gives 0 → +
    freq = merge("ties", base, [tau1, tau2, tau3], density=0.5, trim="tensor", scaling_factor=1.0,
                 sign_method="frequency")
    assert float(freq[2]) == 2.0 and float(freq[0]) == 4.0


def test_ties_global_trim_differs_from_per_tensor_trim():
    base = {"big": torch.zeros(4, dtype=D), "small": torch.zeros(4, dtype=D)}
    model = {"big": t(10, 20, 30, 40), "small": t(1, 2, 3, 4)}
    glob = merge("ties", base, [model], density=0.5, trim="global", scaling_factor=1.0)
    per = merge("ties", base, [model], density=0.5, trim="tensor", scaling_factor=1.0)
    assert close(glob["big"], t(10, 20, 30, 40)) and close(glob["small"], t(0, 0, 0, 0))
    assert close(per["big"], t(0, 0, 30, 40)) and close(per["small"], t(0, 0, 3, 4))


@pytest.mark.parametrize("trim", ["global", "tensor"])
def test_ties_keeps_exactly_the_pinned_count_even_with_ties_and_blocks(trim):
    gen = torch.Generator().manual_seed(1)
    base = {"x": torch.zeros(40, 25, dtype=D), "y": torch.zeros(300, dtype=D)}
    model = {"x": torch.randint(-3, 4, (40, 25), generator=gen).to(D), "y": torch.randint(-3, 4, (300,), generator=gen).to(D)}
    merged = merge("ties", base, [model], density=0.2, trim=trim, scaling_factor=1.0, chunk=100)
    kept = {k: int((merged[k] != 0).sum()) for k in merged}
    if trim == "global":
        assert sum(kept.values()) == math.floor(0.2 * 1300)
    else:
        assert kept == {"x": 200, "y": 60}


def test_ties_with_full_density_and_agreeing_signs_is_task_arithmetic():
    base = BASE
    models = [{k: v + 0.1 * (i + 1) * torch.rand_like(v).add(0.1) for k, v in BASE.items()} for i in range(3)]
    ta = merge("task_arithmetic", base, models, scaling_factor=0.4)
    assert close(merge("ties", base, models, density=1.0, scaling_factor=0.4), ta)
    assert close(merge("ties", base, models, density=1.0, scaling_factor=1.2, merge_func="mean"), ta)
    assert close(merge("dare_ties", base, models, drop_rate=0.0, scaling_factor=0.4), ta)
    assert close(merge("della", base, models, density=1.0, epsilon=0.0, scaling_factor=0.4), ta)


def test_ties_entries_against_the_elected_sign_never_contribute():
    base = t(0, 0)
    merged = merge("ties", base, [t(5, 1), t(-1, 1), t(-1, 1)], density=1.0, scaling_factor=1.0)
    assert close(merged, t(5, 3))  # −1, −1 lose the election at index 0 (total +3)


def test_ties_zero_sum_takes_the_model_majority_or_the_tensor_majority():
    base = {"a": torch.zeros(4, dtype=D), "b": torch.zeros(5, dtype=D)}
    # index 0 of "a" cancels exactly (+2, −2); "a" elects + elsewhere, "b" elects − everywhere.
    m1 = {"a": t(2, 1, 1, 1), "b": t(-1, -1, -1, -1, -1)}
    m2 = {"a": t(-2, 1, 1, 1), "b": t(-1, -1, -1, -1, -1)}
    model_level = merge("ties", base, [m1, m2], density=1.0, scaling_factor=1.0, chunk=2)
    tensor_level = merge("ties", base, [m1, m2], density=1.0, scaling_factor=1.0, zero_sign="tensor")
    assert float(model_level["a"][0]) == -2.0  # whole model: 5 negative vs 3 positive elections
    assert float(tensor_level["a"][0]) == 2.0  # tensor "a": 3 positive elections
    assert close(model_level["b"], t(-2, -2, -2, -2, -2))


def test_ties_zero_sign_plus_is_peft_and_mergekit_on_a_tied_count():
    base = t(0, 0, 0, 0)
    # Index 0: one model +3, one −1 → a tied count (sign_method=frequency); every other entry elects −,
    # so the whole-model and the tensor majority are both −.
    m1, m2 = t(3, -1, -1, -1), t(-1, -1, -1, -1)
    # PEFT calculate_majority_sign_mask(method="frequency"): sign sum [0, −2, −2, −2] → majority [+, −, −, −]
    # (sum >= 0 → +); disjoint_merge: index 0 keeps m1's 3 only.
    freq = dict(density=1.0, scaling_factor=1.0, sign_method="frequency")
    assert close(merge("ties", base, [m1, m2], zero_sign="plus", **freq), t(3, -2, -2, -2))
    assert close(merge("ties", base, [m1, m2], zero_sign="plus", merge_func="mean", **freq), t(3, -1, -1, -1))
    assert close(merge("ties", base, [m1, m2], zero_sign="model", **freq), t(-1, -2, -2, -2))
    assert close(merge("ties", base, [m1, m2], zero_sign="tensor", **freq), t(-1, -2, -2, -2))
    # Index 0 with cancelling mass (+2, −2) under sign_method=total: PEFT's sum [0, …] ≥ 0 → + as well.
    p1, p2 = t(2, -1, -1, -1), t(-2, -1, -1, -1)
    total = dict(density=1.0, scaling_factor=1.0)
    assert close(merge("ties", base, [p1, p2], zero_sign="plus", **total), t(2, -2, -2, -2))
    assert close(merge("ties", base, [p1, p2], zero_sign="model", **total), t(-2, -2, -2, -2))
    # dare_ties (no drop) and della (keep probability 1) share the election and take the same choice.
    assert close(merge("dare_ties", base, [m1, m2], drop_rate=0.0, zero_sign="plus", scaling_factor=1.0,
                       sign_method="frequency"), t(3, -2, -2, -2))
    assert close(merge("della", base, [p1, p2], density=1.0, epsilon=0.0, scaling_factor=1.0, zero_sign="plus"),
                 t(2, -2, -2, -2))
    assert close(merge("della", base, [p1, p2], density=1.0, epsilon=0.0, scaling_factor=1.0), t(-2, -2, -2, -2))


# -- declared ranges -------------------------------------------------------------------------------

UNBOUNDED = {"scaling_factor", "t"}
"""Numeric hyperparameters that may take any real value (λ < 0 negates; linear_interpolation's t > 1 is ExPO)."""


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_numeric_hyperparameter_declares_its_range(name):
    cls = get_host().registry("method").entry(name).load()
    for hp in cls.hyperparameters:
        if hp.type in (int, float) and not (hp.name in UNBOUNDED and name != "slerp"):
            assert hp.range_text() is not None, f"{name}.{hp.name}"


@pytest.mark.parametrize(("name", "option", "value", "range_text"), [
    ("ties", "density", "2", "(0, 1]"), ("ties", "density", "0", "(0, 1]"), ("dare", "drop_rate", "1.5", "[0, 1)"),
    ("dare", "drop_rate", "1", "[0, 1)"), ("dare_ties", "drop_rate", "-0.1", "[0, 1)"),
    ("breadcrumbs", "gamma", "1", "[0, 1)"), ("della", "epsilon", "0.6", "[0, 0.5]"),
    ("iso_cts", "common_space_fraction", "0", "(0, 1]"), ("slerp", "t", "1.5", "[0, 1]"),
])
def test_dry_run_rejects_out_of_range_values_in_one_line(fb_cli, name, option, value, range_text):
    result = fb_cli("run", "-p", "tiny", "-m", name, "-s", f"{option}={value}", "--dry-run")
    assert result.exit_code != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{name}.{option}" in lines[0] and value in lines[0] and range_text in lines[0], lines[0]


def test_della_checks_density_plus_minus_epsilon_when_constructed(fb_cli):
    result = fb_cli("run", "-p", "tiny", "-m", "della", "-s", "density=0.9", "-s", "epsilon=0.2", "--dry-run")
    assert result.exit_code != 0
    assert "della.density" in result.stdout + result.stderr and "0.9 ± 0.2" in result.stdout + result.stderr
    with pytest.raises(ConfigError, match="epsilon"):
        method("della", density=0.1, epsilon=0.2)
    assert fb_cli("run", "-p", "tiny", "-m", "ties", "-s", "density=1", "--dry-run").exit_code == 0


# -- DARE ------------------------------------------------------------------------------------------


def test_dare_zero_rate_is_task_arithmetic_and_seeds_matter():
    assert close(merge("dare", BASE, MODELS, drop_rate=0.0), merge("task_arithmetic", BASE, MODELS))
    a = merge("dare", BASE, MODELS, seed=1)
    assert not close(a, merge("dare", BASE, MODELS, seed=2))
    with pytest.raises(ConfigError, match="drop_rate"):
        merge("dare", BASE, MODELS, drop_rate=1.0)


def test_dare_drops_about_p_and_is_unbiased():
    base = torch.zeros(20000, dtype=D)
    tau = torch.linspace(0.5, 1.5, 20000, dtype=D)
    dropped = merge("dare", base, [tau], drop_rate=0.3, scaling_factor=1.0)
    assert abs(float((dropped == 0).double().mean()) - 0.3) < 0.02
    kept = dropped != 0
    assert close(dropped[kept], tau[kept] / 0.7)
    small_base, small_tau = torch.zeros(8, dtype=D), t(1, -2, 3, -4, 5, -6, 7, -8)
    mean = sum(merge("dare", small_base, [small_tau], drop_rate=0.5, scaling_factor=1.0, seed=s) for s in range(800)) / 800
    assert torch.allclose(mean, small_tau, atol=0.15 * 8)  # ≈ 4.3 σ of the Monte-Carlo mean at |τ| = 8
    assert torch.allclose(mean / small_tau, torch.ones(8, dtype=D), atol=0.2)
    l1 = merge("dare", base, [tau], drop_rate=0.3, scaling_factor=1.0, rescale="l1")
    assert float(l1.abs().sum()) == pytest.approx(float(tau.abs().sum()))


# -- Breadcrumbs and DELLA -------------------------------------------------------------------------


def test_breadcrumbs_hand_example_and_identity_settings():
    tau = t(10, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    got = merge("breadcrumbs", torch.zeros(10, dtype=D), [tau], gamma=0.1, density=0.5, scaling_factor=1.0)
    assert close(got, t(0, 0, 0, 0, 0, 5, 6, 7, 8, 9))  # outlier 10 dropped, then the 5 largest kept
    assert close(merge("breadcrumbs", BASE, MODELS, gamma=0.0, density=1.0), merge("task_arithmetic", BASE, MODELS))


def test_breadcrumbs_with_density_plus_gamma_above_one_drops_the_outliers_first():
    tau = t(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    got = merge("breadcrumbs", torch.zeros(10, dtype=D), [tau], gamma=0.3, density=0.9, scaling_factor=1.0)
    # ⌊0.3·10⌋ = 3 outliers (10, 9, 8) dropped, min(⌊0.9·10⌋, 10 − 3) = 7 kept (mergekit would keep 9)
    assert close(got, t(1, 2, 3, 4, 5, 6, 7, 0, 0, 0))


def test_della_keep_probabilities_are_in_range_and_rise_with_magnitude():
    from fusionbench_methods.della import keep_probabilities

    q = keep_probabilities(t(0.1, -3, 2), 0.6, 0.2)
    assert close(q, t(0.4, 0.8, 0.6))
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 50, generator=gen, dtype=D)
    q = keep_probabilities(rows, 0.7, 0.15)
    assert float(q.min()) >= 0.55 - 1e-12 and float(q.max()) <= 0.85 + 1e-12
    order = rows.abs().argsort(dim=1)
    assert (q.gather(1, order).diff(dim=1) > 0).all()


def test_della_linear_is_unbiased():
    base, tau = torch.zeros(6, dtype=D), t(1, -2, 3, -4, 5, -6)
    mean = sum(merge("della", base, [tau], sign_consensus=False, scaling_factor=1.0, density=0.5, epsilon=0.3,
                     seed=s) for s in range(800)) / 800
    assert torch.allclose(mean / tau, torch.ones(6, dtype=D), atol=0.2)


# -- Model Stock, SLERP, MagMax -------------------------------------------------------------------


def test_model_stock_hand_value_orthogonality_and_order():
    base = t(0, 0)
    # τ1 = (1, 0), τ2 = (1, 1): cos = 1/√2, t = 2c/(c + 1)
    c = 1 / math.sqrt(2)
    ratio = 2 * c / (c + 1)
    assert close(merge("model_stock", base, [t(1, 0), t(1, 1)]), ratio * t(1, 0.5))
    assert close(merge("model_stock", t(1, 1), [t(2, 1), t(1, 3)]), t(1, 1))  # orthogonal → θ₀
    assert close(merge("model_stock", BASE, MODELS), merge("model_stock", BASE, MODELS[::-1]), 1e-12)


def test_model_stock_with_three_models_averages_the_cosines_not_the_angles():
    # cos(τ1, τ2) = 0, cos(τ1, τ3) = cos(τ2, τ3) = 1/√2 → mean cosine √2/3 (the mean angle, 60°, would give 0.5)
    c = math.sqrt(2) / 3
    ratio = 3 * c / (2 * c + 1)
    assert close(merge("model_stock", t(0, 0), [t(1, 0), t(0, 1), t(1, 1)]), ratio * t(2 / 3, 2 / 3))


def test_slerp_endpoints_hand_value_norm_and_fallback():
    v0, v1 = t(1, 0), t(0, 1)
    assert close(merge("slerp", None, [v0, v1], t=0.0), v0)
    assert close(merge("slerp", None, [v0, v1], t=1.0), v1)
    half = math.sqrt(0.5)
    assert close(merge("slerp", None, [v0, v1], t=0.5), t(half, half))
    a, b = t(3, 4, 0), t(0, 3, 4)
    assert float(torch.linalg.vector_norm(merge("slerp", None, [a, b], t=0.3))) == pytest.approx(5.0)
    assert close(merge("slerp", None, [t(1, 2), t(2, 4)], t=0.25), t(1.25, 2.5))  # collinear → lerp
    with pytest.raises(ConfigError, match="exactly 2"):
        merge("slerp", None, MODELS)


def test_magmax_picks_the_largest_magnitude_entry():
    got = merge("magmax", t(1, 1, 1), [t(2, -4, 3), t(-2, 6, 3)], scaling_factor=0.5)
    # τ1 = (1, −5, 2), τ2 = (−3, 5, 2): max |.| → (−3, −5 [first on tie], 2)
    assert close(got, t(1 - 1.5, 1 - 2.5, 1 + 1))


# -- spectral methods ------------------------------------------------------------------------------


def test_tsv_m_reproduces_a_single_model_and_orthogonal_tasks():
    assert close(merge("tsv_m", BASE, MODELS[:1]), MODELS[0], 1e-10)
    base = torch.zeros(4, 4, dtype=D)
    tau1 = torch.diag(t(3, 2, 0, 0))
    tau2 = torch.diag(t(0, 0, 1, 0.5))
    assert close(merge("tsv_m", base, [tau1, tau2]), tau1 + tau2)
    vec = merge("tsv_m", t(1, 1), [t(2, 3), t(4, 1)], scaling_factor=0.5)
    assert close(vec, t(1 + 0.5 * 2, 1 + 0.5 * 1))  # non-matrix: θ₀ + α·mean τ


def test_iso_c_flattens_the_spectrum_of_the_sum():
    base = torch.zeros(2, 2, dtype=D)
    got = merge("iso_c", base, [torch.diag(t(2, 0)), torch.diag(t(1, 1))])
    assert close(got, torch.diag(t(2, 2)))  # Δ = diag(3, 1) → σ̄ = 2
    merged = merge("iso_c", BASE, MODELS)
    delta = merged["a.weight"] - BASE["a.weight"]
    s = torch.linalg.svdvals(delta)
    assert close(s, s.mean().expand_as(s), 1e-10)
    total_s = torch.linalg.svdvals(sum(m["a.weight"] - BASE["a.weight"] for m in MODELS))
    assert float(s[0]) == pytest.approx(float(total_s.mean()))
    assert close(merged["a.bias"], merge("simple_average", None, MODELS)["a.bias"])


def test_iso_cts_gives_the_remainder_of_the_rank_to_the_common_subspace():
    from fusionbench_methods.iso_cts import subspace_sizes

    # r = 10, T = 3, f = 0.5: ⌊0.5·10⌋ = 5, k_t = ⌊(10 − 5)/3⌋ = 1, k_c = 10 − 3·1 = 7 (5 + remainder 2)
    assert subspace_sizes(10, 0.5, 3) == (7, 1)
    # ViT-B (r = 768, f = 0.8 → ⌊614.4⌋ = 614): 8 tasks k_t = ⌊154/8⌋ = 19, 20 tasks k_t = ⌊154/20⌋ = 7
    assert subspace_sizes(768, 0.8, 8) == (768 - 8 * 19, 19)
    assert subspace_sizes(768, 0.8, 20) == (768 - 20 * 7, 7)
    assert subspace_sizes(10, 1.0, 3) == (10, 0)


def test_iso_cts_is_iso_c_with_a_full_common_space_and_isotropic_at_full_rank_otherwise():
    assert close(merge("iso_cts", BASE, MODELS, common_space_fraction=1.0), merge("iso_c", BASE, MODELS), 1e-10)
    gen = torch.Generator().manual_seed(4)
    base = torch.zeros(12, 10, dtype=D)
    models = [torch.randn(12, 10, generator=gen, dtype=D) for _ in range(3)]
    for fraction in (0.5, 0.6):
        delta = merge("iso_cts", base, models, common_space_fraction=fraction)
        s = torch.linalg.svdvals(delta)
        # all r = 10 directions survive (7 + 3·1 at f = 0.5, 7 + 3·1 at f = 0.6), with one flat σ̄
        assert s.numel() == 10 and float(s.min()) > 1e-6, fraction
        assert close(s, s.mean().expand(10), 1e-10), fraction
    with pytest.raises(ConfigError, match=r"common_space_fraction.*\(0, 1\]"):
        merge("iso_cts", BASE, MODELS, common_space_fraction=0.0)


# -- through the CLI -------------------------------------------------------------------------------


def n_models(name):
    return 2 if name == "slerp" else 3


def test_the_method_list_comes_from_the_registry():
    assert {"task_arithmetic", "ties", "dare", "iso_cts", "slerp"} <= set(ALL_METHODS) and len(ALL_METHODS) >= 15


@pytest.mark.parametrize("name", ["task_arithmetic", "ties"])
def test_task_arithmetic_and_ties_beat_the_pretrained_model_on_the_tiny_suite(name, tiny_modelpool, tiny_taskpool):
    from fusionbench_core.protocols import PRETRAINED

    pool, tasks = tiny_modelpool(), tiny_taskpool()
    pretrained = tasks.evaluate(pool.load_model(PRETRAINED)).average["accuracy"]
    merged = tasks.evaluate(method(name).run(pool)).average["accuracy"]
    assert merged > pretrained + 0.1  # measured: 0.56 (task arithmetic), 0.57 (ties) against 0.39


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_runs_through_fb_run_on_the_tiny_suite(fb_cli, tmp_path, name, tiny_modelpool, tiny_taskpool):
    """The report's scores are those of the same merge done in memory (settings, seed and pools reach the method)."""
    args = ["run", "-m", name, "-p", "tiny", "--json", "-o", str(tmp_path / "run")]
    if name == "slerp":
        args += ["-s", "modelpool.n_models=2", "-s", "taskpool.n_models=2"]
    result = fb_cli(*args)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json
    assert report["method"] == name and set(report["tasks"]) == {f"task{i}" for i in range(n_models(name))}
    in_memory = tiny_taskpool(n_models(name)).evaluate(method(name).run(tiny_modelpool(n_models(name))))
    assert report["average"]["accuracy"] == pytest.approx(in_memory.average["accuracy"], abs=1e-12)
    for task, metrics in in_memory.tasks.items():
        assert report["tasks"][task] == pytest.approx(metrics, abs=1e-9), task


def save_dir(path, tensors):
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    return str(path)


def read_dir(path):
    from fusionbench_core.engine.sources import open_source

    source = open_source(path)
    return {k: source.get(k) for k in source.keys()}


def test_fb_merge_dare_is_byte_identical_across_runs_and_slerp_matches_in_memory(fb_cli, tmp_path):
    base = save_dir(tmp_path / "base", BASE)
    models = [save_dir(tmp_path / f"m{i}", m) for i, m in enumerate(MODELS)]
    outputs = []
    for run in range(2):
        out = tmp_path / f"dare{run}"
        args = ["merge", "dare", "--pretrained", base, "-o", str(out), "--seed", "7", "-s", "drop_rate=0.4"]
        for model in models:
            args += ["--model", model]
        result = fb_cli(*args)
        assert result.exit_code == 0, result.stdout + result.stderr
        outputs.append((out / "model.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    assert close(read_dir(tmp_path / "dare0"), merge("dare", BASE, MODELS, seed=7, drop_rate=0.4), 0)
    result = fb_cli("merge", "slerp", "--model", models[0], "--model", models[1], "-s", "t=0.3", "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert close(read_dir(tmp_path / "s"), merge("slerp", None, MODELS[:2], t=0.3), 1e-12)
    bad = fb_cli("merge", "slerp", "--model", models[0], "-o", str(tmp_path / "bad"))
    assert bad.exit_code == 1 and "exactly 2" in bad.stdout + bad.stderr


def test_fb_merge_ties_patches_model_majority_ties_on_disk(fb_cli, tmp_path):
    base = save_dir(tmp_path / "base", {"a": torch.zeros(4, dtype=D), "b": torch.zeros(5, dtype=D)})
    m1 = save_dir(tmp_path / "m1", {"a": t(2, 1, 1, 1), "b": t(-1, -1, -1, -1, -1)})
    m2 = save_dir(tmp_path / "m2", {"a": t(-2, 1, 1, 1), "b": t(-1, -1, -1, -1, -1)})
    result = fb_cli("merge", "ties", "--pretrained", base, "--model", m1, "--model", m2, "-s", "density=1",
                    "-s", "scaling_factor=1", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stdout + result.stderr
    merged = read_dir(tmp_path / "out")
    assert close(merged["a"], t(-2, 2, 2, 2)) and close(merged["b"], t(-2, -2, -2, -2, -2))
