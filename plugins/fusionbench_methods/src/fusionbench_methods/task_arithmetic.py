"""Task arithmetic (Ilharco et al. 2023): θ = θ₀ + λ Σ_i (θ_i − θ₀); a negative λ negates tasks."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class TaskArithmetic(TensorwiseAlgorithm):
    """Add the scaled sum of task vectors to the pretrained weights.

    Unlike git-theta, two models are not special-cased into an interpolation: λ always scales the
    sum, so λ = 1/T gives the simple average and λ = 0 the pretrained model.
    """

    name = "task_arithmetic"
    requirement = Requirement.DATA_FREE
    hyperparameters = (
        Hyperparameter("scaling_factor", float, 0.3, "λ, the scale of the summed task vectors (negative: negation)"),
    )

    def merge_tensor(self, key, pretrained, models):
        """θ₀ + λ Σ (θ_i − θ₀), accumulated one model at a time."""
        total = None
        for tensor in models:
            delta = tensor.sub_(pretrained)
            total = delta if total is None else total.add_(delta)
        return pretrained + self.scaling_factor * total

