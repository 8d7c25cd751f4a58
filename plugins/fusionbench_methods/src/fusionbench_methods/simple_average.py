"""Simple (uniform) average of the fine-tuned weights: θ = (1/T) Σ θ_i."""

from __future__ import annotations

from fusionbench_core import Requirement
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class SimpleAverage(TensorwiseAlgorithm):
    """Uniform average of the fine-tuned models' weights (a model soup); needs no pretrained model."""

    name = "simple_average"
    requirement = Requirement.DATA_FREE
    needs_pretrained = False
    hyperparameters = ()

    def merge_tensor(self, key, pretrained, models):
        """Running mean, so memory does not grow with the number of models."""
        total = None
        count = 0
        for tensor in models:
            total = tensor if total is None else total.add_(tensor)
            count += 1
        return total.div_(count)

