"""The mini-vision transformer's permutation spec (C.10): heads as blocks, MLP units, the residual stream."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("fusionbench_alignment")

from fusionbench_alignment.common import model_state  # noqa: E402
from fusionbench_alignment.spec import PermutationSpec, permute_state, random_permutations  # noqa: E402
from fusionbench_alignment.weight_matching import match_weights  # noqa: E402
from fusionbench_vision.independent.transformer_spec import clip_vision_permutation_spec  # noqa: E402
from fusionbench_vision.mini import model as mm  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    config = mm.encoder_config(width=16, layers=2, heads=4, mlp=24, patch=8)
    model = mm.new_encoder(config, seed=0).eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "norm" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return config, model


def test_a_permuted_encoder_computes_the_same_function_in_the_permuted_basis(encoder):
    config, model = encoder
    spec = PermutationSpec.from_data(clip_vision_permutation_spec(config, model.state_dict()))
    state = model_state(model)
    perms = random_permutations(spec, state, seed=3)
    assert len(perms["H0"]) == 4 and len(perms["M1"]) == 24 and len(perms["R"]) == 16
    copy = mm.new_encoder(config, seed=0).eval()
    copy.load_state_dict(permute_state(spec, state, perms))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out_a = model(pixel_values=pixels).pooler_output
        out_b = copy(pixel_values=pixels).pooler_output
    torch.testing.assert_close(out_b, out_a[:, perms["R"]], atol=1e-5, rtol=1e-5)


def test_weight_matching_recovers_the_encoder_permutation(encoder):
    config, model = encoder
    spec = PermutationSpec.from_data(clip_vision_permutation_spec(config, model.state_dict()))
    state = model_state(model)
    copy = permute_state(spec, state, random_permutations(spec, state, seed=5))
    history = []
    found = match_weights(spec, state, copy, seed=0, history=history)
    assert all(b >= a for a, b in zip(history, history[1:]))
    aligned = permute_state(spec, copy, found)
    for key in state:
        assert torch.equal(aligned[key], state[key]), key
