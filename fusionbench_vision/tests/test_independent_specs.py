"""Permutation specs of the independent suites' architectures (C.10): symmetry, exact recovery, OT fusion, ZipIt!."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fusionbench_alignment")

from fusionbench_alignment.common import model_state  # noqa: E402
from fusionbench_alignment.ot_fusion import apply_transport, fuse_maps  # noqa: E402
from fusionbench_alignment.spec import PermutationSpec, permute_state, random_permutations  # noqa: E402
from fusionbench_alignment.weight_matching import match_weights  # noqa: E402
from fusionbench_alignment.zipit import zip_matrices, zip_states  # noqa: E402
from fusionbench_vision.independent.models import SmallResNet, WideMLP, model_from_state  # noqa: E402

X = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def randomised(model, seed=0):
    """``model`` with random weights and, for BatchNorm, random affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
                elif name.endswith("running_mean") or name.endswith("bias"):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * (1.0 if tensor.dim() == 1 else 0.2))
    return model.eval()


MODELS = {"mlp": lambda: WideMLP([32, 24, 16]), "cnn": lambda: SmallResNet([6, 5, 7, 8, 9, 10])}


def setup(kind, seed=1):
    model = randomised(MODELS[kind]())
    spec = PermutationSpec.from_data(model.permutation_spec())
    state = model_state(model)
    perms = random_permutations(spec, state, seed)
    return model, spec, state, perms, model_from_state(model.architecture, permute_state(spec, state, perms))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_randomly_permuted_copy_computes_the_same_function(kind):
    model, spec, state, perms, copy = setup(kind)
    assert set(perms) == set(spec.permutations) and len(perms) == (3 if kind == "mlp" else 6)
    assert any(not torch.equal(a, b) for a, b in zip(state.values(), model_state(copy).values()))
    torch.testing.assert_close(copy(X), model(X), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_weight_matching_recovers_the_permutation(kind):
    model, spec, state, perms, copy = setup(kind, seed=2)
    history = []
    found = match_weights(spec, state, model_state(copy), seed=0, history=history)
    keys = spec.axes_by_key()
    maximum = sum(float((state[k].double() ** 2).sum()) for k in keys)
    assert history[-1] == pytest.approx(maximum, rel=1e-9)
    assert all(b >= a for a, b in zip(history, history[1:]))
    aligned = permute_state(spec, model_state(copy), found)
    for key in state:
        assert torch.equal(aligned[key], state[key]), key


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_ot_fusion_with_exact_emd_of_a_permuted_copy_returns_the_original(kind):
    model, spec, state, perms, copy = setup(kind, seed=3)
    other = model_state(copy)
    aligned = apply_transport(spec, other, fuse_maps(spec, other, state, "emd"))
    for key in state:
        if state[key].is_floating_point():
            torch.testing.assert_close(aligned[key], state[key], atol=1e-6, rtol=0)


def test_partial_zip_of_the_cnn_with_itself_widens_the_tail_and_keeps_the_function():
    model, spec, state, perms, copy = setup("cnn", seed=4)
    eye = {}
    for name in list(spec.permutations)[:2]:
        n = spec.sizes(state)[name]
        corr = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
        corr[torch.arange(n), n + torch.arange(n)] = corr[n + torch.arange(n), torch.arange(n)] = 1.0
        eye[name] = zip_matrices(corr, beta=0.0)
    zipped = model_from_state("small-resnet", zip_states(spec, [state, state], eye))
    assert zipped.channels == [6, 5, 14, 16, 18, 20]
    torch.testing.assert_close(zipped(X), model(X), atol=1e-5, rtol=1e-5)
