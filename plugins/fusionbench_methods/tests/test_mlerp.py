"""MLERP against hand-computed values: the SLERP midpoint for two equal-norm models, identity, norms, scope."""

from __future__ import annotations

import math

import pytest
import torch

from fusionbench_core.engine.sources import StateDictSource
from fusionbench_core.engine.tensorwise import merge_sources
from fusionbench_core.engine.writer import StateDictSink
from fusionbench_core.config import ComponentSpec
from fusionbench_core.errors import ConfigError
from fusionbench_core.plugins import get_host
from fusionbench_core.run import instantiate

D = torch.float64


def method(name, **settings):
    return instantiate(get_host(), "method", ComponentSpec(name, settings))


def merge(name, pretrained, models, *, chunk=None, **settings):
    """Merge float64 state dicts (or single tensors, under key 'w') in memory."""
    wrap = lambda sd: StateDictSource(sd if isinstance(sd, dict) else {"w": sd})  # noqa: E731
    sink = StateDictSink()
    merge_sources(method(name, **settings), wrap(pretrained) if pretrained is not None else None,
                  [wrap(m) for m in models], sink=sink, chunk_elements=chunk)
    return sink.state if isinstance(models[0], dict) else sink.state["w"]


def random_state(seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(6, 5, generator=gen, dtype=D) * scale,
            "a.bias": torch.randn(6, generator=gen, dtype=D) * scale,
            "b.weight": torch.randn(4, 6, generator=gen, dtype=D) * scale}


def flat(state):
    return torch.cat([state[k].reshape(-1) for k in sorted(state)])


def test_two_models_at_right_angles_give_the_hand_computed_slerp_midpoint():
    # v0 = (3, 0), v1 = (0, 3): the average (1.5, 1.5) has norm 1.5·√2; rescaled to 3 it is 3/√2·(1, 1),
    # which is SLERP at t = 0.5 on the circle of radius 3.
    out = merge("mlerp", None, [torch.tensor([3.0, 0.0], dtype=D), torch.tensor([0.0, 3.0], dtype=D)])
    assert torch.allclose(out, torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2)], dtype=D), atol=1e-12)
    slerp = merge("slerp", None, [torch.tensor([3.0, 0.0], dtype=D), torch.tensor([0.0, 3.0], dtype=D)], t=0.5)
    assert torch.allclose(out, slerp, atol=1e-12)


def test_two_equal_norm_models_reduce_to_slerp_over_the_whole_model():
    a, b = random_state(1), random_state(2)
    scale = flat(a).norm() / flat(b).norm()
    b = {k: v * scale for k, v in b.items()}  # equal whole-model norms
    out = flat(merge("mlerp", None, [a, b]))
    # SLERP at t = 1/2 of the flattened models, by hand: (v0 + v1) / (2 cos(Ω/2)).
    v0, v1 = flat(a), flat(b)
    omega = torch.arccos(v0 @ v1 / (v0.norm() * v1.norm()))
    expected = (v0 + v1) * (math.sin(omega / 2) / math.sin(omega))
    assert torch.allclose(out, expected, atol=1e-12)
    assert math.isclose(float(out.norm()), float(v0.norm()), rel_tol=1e-12), "equal-norm endpoints: norm preserved"


def test_identical_models_give_that_model():
    a = random_state(3)
    out = merge("mlerp", None, [a, a, a])
    assert all(torch.allclose(out[k], a[k], atol=1e-12) for k in a)


def test_output_has_the_largest_norm_and_the_direction_of_the_average():
    models = [random_state(i, scale=s) for i, s in ((4, 1.0), (5, 2.0), (6, 0.5))]
    out = flat(merge("mlerp", None, models))
    average = sum(flat(m) for m in models) / 3
    assert math.isclose(float(out.norm()), max(float(flat(m).norm()) for m in models), rel_tol=1e-12)
    assert math.isclose(float(out @ average / (out.norm() * average.norm())), 1.0, rel_tol=1e-12)
    mean = flat(merge("mlerp", None, models, target="mean"))
    assert math.isclose(float(mean.norm()), sum(float(flat(m).norm()) for m in models) / 3, rel_tol=1e-12)


def test_tensor_scope_rescales_each_tensor_by_its_own_norms():
    a = {"x": torch.tensor([2.0, 0.0], dtype=D), "y": torch.tensor([0.0, 1.0], dtype=D)}
    b = {"x": torch.tensor([0.0, 2.0], dtype=D), "y": torch.tensor([0.0, -1.0], dtype=D)}
    out = merge("mlerp", None, [a, b], scope="tensor")
    assert torch.allclose(out["x"], torch.tensor([math.sqrt(2), math.sqrt(2)], dtype=D), atol=1e-12)
    assert torch.equal(out["y"], torch.zeros(2, dtype=D)), "a zero average stays zero"
    whole = merge("mlerp", None, [a, b])
    # Whole model: norms √5 and √5, average (1, 1, 0, 0) of norm √2, factor √(5/2).
    factor = math.sqrt(5 / 2)
    assert torch.allclose(whole["x"], torch.tensor([factor, factor], dtype=D), atol=1e-12)


def test_chunked_merge_equals_the_whole_tensor_merge():
    models = [random_state(i) for i in (7, 8, 9)]
    whole, chunked = merge("mlerp", None, models), merge("mlerp", None, models, chunk=4)
    assert all(torch.allclose(whole[k], chunked[k], atol=1e-12) for k in whole)


def test_needs_no_pretrained_model_and_records_one_pass():
    algorithm = method("mlerp")
    sink = StateDictSink()
    merge_sources(algorithm, None, [StateDictSource(random_state(10)), StateDictSource(random_state(11))], sink=sink)
    assert algorithm.cost["prepare_passes"] == 1 and not algorithm.needs_pretrained


def test_hyperparameter_choices_are_checked():
    with pytest.raises(ConfigError, match="scope"):
        method("mlerp", scope="layer")
