"""Git Re-Basin weight matching (Ainsworth et al. 2023): permutations maximising ``Σ⟨θ_A, π(θ_B)⟩``, then the average."""

from __future__ import annotations

from collections.abc import Mapping

from fusionbench_core import Hyperparameter, Requirement

from .base import AlignmentMethod

TOLERANCE = 1e-12


def objective(spec, state_a: Mapping, state_b: Mapping, perms: Mapping) -> float:
    """``Σ_k ⟨A_k, π(B)_k⟩`` over the tensors the spec names, in float64."""
    import torch

    from .spec import permute_state

    keys = list(spec.axes_by_key())
    permuted = permute_state(spec, {k: state_b[k] for k in keys}, perms)
    return float(sum(torch.sum(state_a[k].to(torch.float64) * permuted[k].to(torch.float64)) for k in keys))


def match_weights(spec, state_a: Mapping, state_b: Mapping, *, max_iter: int = 100, seed: int = 0,
                  history: list | None = None):
    """Coordinate descent over the spec's permutations; returns ``{perm: LongTensor}`` with ``π(B) ≈ A``.

    Each sweep visits the permutations in a seeded random order; for permutation ``p`` it sums
    ``C = Σ A_(axis) · π_{-p}(B)_(axis)ᵀ`` over every axis ``p`` acts on (the other permutations
    applied) and solves ``linear_sum_assignment(C, maximize=True)``. A new assignment is kept only
    if it improves the objective by more than 1e-12, so the objective never decreases; the descent
    stops after a sweep without improvement, or after ``max_iter`` sweeps. ``history`` receives the
    objective before the first step and after every step.
    """
    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment

    from .spec import identity_permutations, permute_axis

    perms = identity_permutations(spec, state_a)
    by_key = spec.axes_by_key()
    a64 = {k: state_a[k].to(torch.float64) for k in by_key}
    b64 = {k: state_b[k].to(torch.float64) for k in by_key}
    rng = np.random.default_rng(seed)
    names = list(spec.permutations)
    if history is not None:
        history.append(objective(spec, a64, b64, perms))
    for _ in range(max_iter):
        improved = False
        for index in rng.permutation(len(names)):
            name = names[index]
            n = perms[name].numel()
            cost = torch.zeros(n, n, dtype=torch.float64)
            for ax in spec.permutations[name]:
                wb = b64[ax.key]
                for other, other_ax in by_key[ax.key]:
                    if (other, other_ax) != (name, ax):
                        wb = permute_axis(wb, other_ax, perms[other])
                wa = a64[ax.key].movedim(ax.axis, 0)
                wb = wb.movedim(ax.axis, 0)
                wa, wb = wa.reshape(n, -1), wb.reshape(n, -1)
                cost += wa @ wb.T
            rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            current = float(cost[torch.arange(n), perms[name]].sum())
            best = float(cost.numpy()[rows, cols].sum())
            if best > current + TOLERANCE:
                perms[name] = torch.as_tensor(cols, dtype=torch.long)
                improved = True
            if history is not None:
                history.append(objective(spec, a64, b64, perms))
        if not improved:
            break
    return perms


class WeightMatching(AlignmentMethod):
    """Git Re-Basin weight matching: permute every model's units to best match the reference's weights, then average.

    Data-free except for re-estimating BatchNorm statistics of the merged model (``reset_bn``,
    which asks the pool for training inputs when the architecture has BatchNorm).
    """

    name = "weight_matching"
    requirement = Requirement.DATA_FREE
    hyperparameters = AlignmentMethod.hyperparameters + (
        Hyperparameter("max_iter", int, 100, "Most coordinate-descent sweeps", minimum=1),
    )

    def align(self, spec, modelpool, ref, ref_model, other, other_model):
        """``π(θ_other)`` with π from :func:`match_weights`."""
        from .common import model_state
        from .spec import permute_state

        state_a, state_b = model_state(ref_model), model_state(other_model)
        history: list[float] = []
        perms = match_weights(spec, state_a, state_b, max_iter=self.max_iter, seed=self.seed, history=history)
        self.cost[f"objective_{other}"] = history[-1]
        self.cost[f"steps_{other}"] = len(history) - 1
        return permute_state(spec, state_b, perms)
