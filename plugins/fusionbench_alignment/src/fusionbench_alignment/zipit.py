"""ZipIt! (Stoica et al. 2024): merge correlated units across *and within* two models, optionally only up to layer L."""

from __future__ import annotations

from collections.abc import Mapping

from fusionbench_core import BaseAlgorithm, DataRequest, Hyperparameter, Requirement
from fusionbench_core.protocols import Capability

from .base import BATCH_SIZE, EXAMPLES, RESET_BN


def zip_matrices(corr, beta: float = 0.125):
    """Greedy pairing of the ``2n`` units of two models into ``n``; returns merge ``M [n, 2n]`` and unmerge ``U [2n, n]``.

    The most correlated remaining pair is merged first; each unit is merged once (the pairing of
    ZipIt!'s default reduction r = 0.5). A pair inside one model is allowed while that model has
    made fewer than ``⌊beta·n⌋`` such merges. ``M`` averages a pair, ``U`` copies the merged unit
    back to both places, so a layer reading the pair sums its two input columns.
    """
    import torch

    two_n = corr.shape[0]
    n = two_n // 2
    sims = torch.nan_to_num(corr.clone(), nan=-1.0)
    sims.fill_diagonal_(float("-inf"))
    budget = int(beta * n)
    within = [0, 0]
    alive = torch.ones(two_n, dtype=torch.bool)
    merge = torch.zeros(n, two_n, dtype=torch.float64)
    unmerge = torch.zeros(two_n, n, dtype=torch.float64)
    same_model = (torch.arange(two_n)[:, None] < n) == (torch.arange(two_n)[None, :] < n)
    for group in range(n):
        masked = sims.clone()
        masked[~alive] = float("-inf")
        masked[:, ~alive] = float("-inf")
        for side in (0, 1):
            if within[side] >= budget:
                block = slice(0, n) if side == 0 else slice(n, two_n)
                masked[block, block] = float("-inf")
        if torch.isinf(masked.max()):
            masked = torch.where(alive[:, None] & alive[None, :], sims, torch.tensor(float("-inf"), dtype=sims.dtype))
        flat = int(torch.argmax(masked))
        i, j = divmod(flat, two_n)
        if same_model[i, j]:
            within[0 if i < n else 1] += 1
        alive[i] = alive[j] = False
        merge[group, i] = merge[group, j] = 0.5
        unmerge[i, group] = unmerge[j, group] = 1.0
    return merge, unmerge


def zip_states(spec, states: list[Mapping], matrices: Mapping) -> dict:
    """Combine the models' states: each tensor ``Σ_m M_m ×_{axis 0} T_m ×_{inputs} U_m``, averaged where axis 0 is shared.

    ``matrices[perm] = (M [k, 2n], U [2n, k])``; a perm missing from ``matrices`` keeps both models'
    units side by side (``M = U = I``, the widened "unzipped" layers of a partial zip).
    """
    import torch

    by_key = spec.axes_by_key()
    sizes = spec.sizes(states[0])
    count = len(states)
    mats = {}
    for perm, n in sizes.items():
        if perm in matrices:
            mats[perm] = matrices[perm]
        else:
            eye = torch.eye(count * n, dtype=torch.float64)
            mats[perm] = (eye, eye)
    out = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        axes = by_key.get(key, [])
        total = None
        for m, state in enumerate(states):
            tensor = state[key].to(torch.float64)
            for perm, ax in axes:
                if ax.block != 1:
                    raise NotImplementedError("zipit: block (attention-head) permutations are not supported")
                n = sizes[perm]
                merge, unmerge = mats[perm]
                part = merge[:, m * n:(m + 1) * n] if ax.axis == 0 else unmerge[m * n:(m + 1) * n, :].T
                tensor = torch.tensordot(part, tensor.movedim(ax.axis, 0), dims=1).movedim(0, ax.axis)
            total = tensor if total is None else total + tensor
        if not any(ax.axis == 0 for _, ax in axes):
            total = total / count
        out[key] = total.to(first.dtype)
    return out


class ZipIt(BaseAlgorithm):
    """ZipIt!: zip two models' units by activation correlation, within-model merges allowed, up to ``zip_layers``.

    The correlations of all ``2n`` units of each permutation (both models, same training inputs) are
    paired greedily (see :func:`zip_matrices`); every layer becomes ``M·W·U``. ``zip_layers = L``
    zips only the first L permutations of the spec (depth order) and keeps both models' later units
    side by side, so the model widens after layer L and the output averages the two tails
    (a partial zip; the pool must build a model from a state of other widths). Exactly two models.
    """

    name = "zipit"
    requirement = Requirement.TRAIN_STATISTICS
    needs = (Capability.PERMUTATION_SPEC, Capability.TWO_MODELS)
    data = DataRequest(split="train", examples=512, labelled=False)
    hyperparameters = (
        Hyperparameter("beta", float, 0.125, "Share of a model's units that may merge within that model",
                       minimum=0.0, maximum=0.5),
        Hyperparameter("zip_layers", int, -1, "Zip only the first L permutations of the spec (-1: all)", minimum=-1),
        RESET_BN, EXAMPLES, BATCH_SIZE,
    )

    def run(self, modelpool):
        """Correlate, zip, build, re-estimate BatchNorm statistics."""
        from fusionbench_core.errors import ConfigError

        from .common import correlations, has_batchnorm, model_state, require_data, reset_batchnorm
        from .spec import spec_for

        require_data(modelpool, self.name)
        names = list(modelpool.model_names)
        if len(names) != 2:
            raise ConfigError(f"method 'zipit' zips exactly 2 models, model pool '{modelpool.name}' has {len(names)}")
        model_a, model_b = (modelpool.load_model(n) for n in names)
        spec = spec_for(modelpool, model_a)
        corr = correlations(model_a, model_b, modelpool, spec, names, self.examples, self.batch_size)
        zipped = list(spec.permutations)
        if self.zip_layers >= 0:
            zipped = zipped[: self.zip_layers]
        matrices = {perm: zip_matrices(corr[perm], self.beta) for perm in zipped}
        merged = modelpool.build_model(zip_states(spec, [model_state(model_a), model_state(model_b)], matrices))
        self.cost["zipped_permutations"] = len(zipped)
        if self.reset_bn and has_batchnorm(merged):
            reset_batchnorm(merged, modelpool, names, self.examples, self.batch_size)
        return merged.eval()
