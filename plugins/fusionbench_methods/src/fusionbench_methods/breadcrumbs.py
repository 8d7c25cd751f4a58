"""Model Breadcrumbs (Davari & Belilovsky 2024): drop each layer's outliers and its smallest entries, then task arithmetic."""

from __future__ import annotations

import math

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum

from fusionbench_methods._params import density, scaling_factor


class Breadcrumbs(TensorwiseAlgorithm):
    """Per tensor (layer) and model, rank |τ_i|; zero the top ⌊γ·n⌋ (outliers), keep the next ⌊d·n⌋
    (capped at n − ⌊γ·n⌋), zero the rest; no rescaling; then θ = θ₀ + λ Σ_i τ̂_i.

    γ = 0, d = 1 is task arithmetic (mergekit's example values γ = 0.01, d = 0.9 are the defaults;
    the paper's recommended values were not verified). Exact counts via ``kthvalue`` (no sort); ties
    at a threshold go to the first entries in row-major order. Memory is flat in the number of models.
    """

    name = "breadcrumbs"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (
        scaling_factor(0.3, "λ applied to the summed masked task vectors"),
        density(0.9, "d, fraction of each tensor's entries kept"),
        Hyperparameter("gamma", float, 0.01, "γ, fraction of largest-magnitude entries (outliers) dropped",
                       minimum=0.0, maximum=1.0, maximum_exclusive=True),
    )

    def mask(self, delta):
        """Keep mask of one task-vector tensor (exact counts, see the class docstring)."""
        from fusionbench_core.engine.selection import top_k_mask

        n = delta.numel()
        top = math.floor(self.gamma * n)
        keep = min(math.floor(self.density * n), n - top)
        magnitude = delta.abs()
        mask = top_k_mask(magnitude, top + keep)
        if top:
            mask &= ~top_k_mask(magnitude, top)
        return mask

    def merge_tensor(self, key, pretrained, models):
        """Mask and sum the task vectors one model at a time."""
        def masked(delta):
            return delta.mul_(self.mask(delta))

        total, _ = running_sum((masked(tensor - pretrained) for tensor in models), fresh=True)
        return total.mul_(self.scaling_factor).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``breadcrumbs``."""
    register("breadcrumbs", "fusionbench_methods.breadcrumbs:Breadcrumbs",
             summary="Model Breadcrumbs: drop outliers (γ) and small entries (keep d), task arithmetic",
             requirement="data-free")
