"""MaTS (Tam et al. 2023): merging by matching models in task parameter subspaces, solved with
conjugate gradient from a task-arithmetic start, here with Gram (RegMean-style) statistics."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, DataRequest, Hyperparameter, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import CACHE, alpha, batch_size, examples


class MaTS(BaseAlgorithm):
    """``iterations`` conjugate-gradient steps on ``(Σ G̃_i) Wᵀ = Σ G̃_i W_iᵀ`` for every linear layer.

    The start is the task-arithmetic merge ``θ₀ + λ Σ τ_i`` (λ = ``init_scaling_factor``); with enough
    iterations CG reaches RegMean's closed form (same ``alpha``). Parameters without Gram statistics
    take the isotropic-statistics solution, the plain mean (what CG gives for them in one step).
    Grams are shared with RegMean's on-disk cache.
    """

    name = "mats"
    requirement = Requirement.TRAIN_STATISTICS
    needs = (Capability.PRETRAINED,)
    data = DataRequest(split="train", examples=256, labelled=False)
    hyperparameters = (
        Hyperparameter("iterations", int, 10, "Conjugate-gradient steps per linear layer", minimum=0),
        Hyperparameter("init_scaling_factor", float, 0.3, "λ of the task-arithmetic start"),
        alpha(1.0, "Scale of the Grams' off-diagonal entries (1 = plain Gram)"),
        examples(256, "Training inputs per task for the Grams"),
        batch_size(32),
        CACHE,
    )

    def run(self, modelpool):
        """Grams per model, then CG per linear layer from the task-arithmetic start."""
        from fusionbench_core import PRETRAINED
        from fusionbench_core.protocols import require_pretrained

        from .linear_statistics import accumulation_dtype, conjugate_gradient, merge_with_grams, normal_equations

        require_pretrained(modelpool, self.name)
        base = modelpool.tensors(PRETRAINED)
        lam, alpha, iterations = self.init_scaling_factor, self.alpha, self.iterations

        def solve(key, grams, tensors, orient):
            theta0 = orient(base.get(key))
            theta0 = theta0.to(accumulation_dtype(theta0.dtype))
            start = theta0 + lam * sum(t - theta0 for t in tensors)
            lhs, rhs, _ = normal_equations(grams, tensors, alpha)
            return conjugate_gradient(lhs, rhs, start.T.contiguous(), iterations).T.contiguous()

        model = merge_with_grams(self, modelpool, solve)
        self.cost["cg_iterations"] = iterations
        return model


@hookimpl
def register_methods(register):
    """Register ``mats``."""
    register("mats", "fusionbench_data_methods.mats:MaTS",
             summary="MaTS: conjugate-gradient merge of linear layers (Gram statistics) from task arithmetic",
             requirement="train-statistics")
