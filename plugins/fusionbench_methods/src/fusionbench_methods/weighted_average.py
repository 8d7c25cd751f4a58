"""Weighted average of the fine-tuned weights: θ = Σ w_i θ_i / Σ w_i (or Σ w_i θ_i unnormalised)."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError


class WeightedAverage(TensorwiseAlgorithm):
    """Weighted average of the fine-tuned models, in the pool's model order; needs no pretrained model.

    ``weights`` defaults to uniform (then this is the simple average). With ``normalize`` (the
    default, as in FusionBench) the weights are divided by their sum. Element-wise, running sum.
    """

    name = "weighted_average"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    needs_pretrained = False
    chunkable = True
    hyperparameters = (
        Hyperparameter("weights", list, None, "One weight per model, in model order, e.g. [0.7,0.3] (default: uniform)"),
        Hyperparameter("normalize", bool, True, "Divide by the sum of the weights"),
    )

    def prepare(self, pretrained, models, keys):
        """Check the weights against the number of models."""
        weights = self.weights if self.weights is not None else [1.0] * len(models)
        if len(weights) != len(models):
            raise ConfigError(f"hyperparameter 'weighted_average.weights' has {len(weights)} values "
                              f"for {len(models)} models")
        try:
            weights = [float(w) for w in weights]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hyperparameter 'weighted_average.weights' must be numbers, got {self.weights}") from exc
        total = sum(weights)
        if self.normalize:
            if total == 0:
                raise ConfigError("hyperparameter 'weighted_average.weights' sums to 0 and cannot be normalized")
            weights = [w / total for w in weights]
        self._weights = weights

    def merge_tensor(self, key, pretrained, models):
        """Σ w_i θ_i with the (normalized) weights."""
        total = None
        for weight, tensor in zip(self._weights, models, strict=True):
            total = tensor * weight if total is None else total.add_(tensor, alpha=weight)
        return total


@hookimpl
def register_methods(register):
    """Register ``weighted_average``."""
    register("weighted_average", "fusionbench_methods.weighted_average:WeightedAverage",
             summary="Σ w_i θ_i / Σ w_i (weights=[...], normalize=true)", requirement="data-free")
