"""Simple (uniform) average of the fine-tuned weights: θ = (1/T) Σ θ_i."""

from __future__ import annotations

from fusionbench_core import Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum


class SimpleAverage(TensorwiseAlgorithm):
    """Uniform average of the fine-tuned models' weights (a uniform model soup); needs no pretrained model.

    Element-wise with a running sum, so memory does not grow with the number of models.
    """

    name = "simple_average"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    needs_pretrained = False
    chunkable = True
    hyperparameters = ()

    def merge_tensor(self, key, pretrained, models):
        """Running sum divided by the count."""
        total, count = running_sum(models)
        return total.div_(count)


@hookimpl
def register_methods(register):
    """Register ``simple_average``."""
    register("simple_average", "fusionbench_methods.simple_average:SimpleAverage",
             summary="Uniform average of the fine-tuned weights", requirement="data-free")
