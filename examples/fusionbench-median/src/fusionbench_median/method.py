"""Element-wise median merge.

Without a pretrained model the result is the median of the weights; with one (``of_task_vectors``)
it is θ₀ + λ · median_i(θ_i − θ₀). For an even number of models the median is the mean of the two
middle values, so two models give their average.
"""

from __future__ import annotations

import torch

from fusionbench_core import Hyperparameter, Requirement
from fusionbench_core.errors import ConfigError
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class MedianMerging(TensorwiseAlgorithm):
    """Element-wise median of the fine-tuned weights, or of their task vectors."""

    name = "median"
    requirement = Requirement.DATA_FREE
    needs_pretrained = False
    hyperparameters = (
        Hyperparameter("of_task_vectors", bool, False, "Take the median of θ_i − θ₀ and add it to θ₀."),
        Hyperparameter("scaling_factor", float, 1.0, "λ, the scale of the median task vector."),
    )

    def merge_tensor(self, key, pretrained, models):
        """The median over models of one tensor (only this tensor's models are held)."""
        stacked = torch.stack(list(models))
        if self.of_task_vectors:
            if pretrained is None:
                raise ConfigError("method 'median': of_task_vectors=true needs a pretrained model")
            return pretrained + self.scaling_factor * _median(stacked - pretrained)
        return _median(stacked)


def _median(stacked: torch.Tensor) -> torch.Tensor:
    """Median along dim 0, averaging the two middle values when the count is even."""
    ordered = stacked.sort(dim=0).values
    count = ordered.shape[0]
    middle = count // 2
    if count % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
