"""Task arithmetic (Ilharco et al. 2023): θ = θ₀ + λ Σ_i (θ_i − θ₀); a negative λ negates tasks."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum


class TaskArithmetic(TensorwiseAlgorithm):
    """Add the scaled sum of task vectors to the pretrained weights.

    Unlike git-theta, two models are not special-cased into an interpolation: λ always scales the
    sum, so λ = 1/T gives the simple average, λ = 0 the pretrained model, and λ < 0 negates the
    tasks (forgetting). Element-wise with a running sum: memory is flat in the number of models.
    """

    name = "task_arithmetic"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    chunkable = True
    hyperparameters = (
        Hyperparameter("scaling_factor", float, 0.3, "λ, the scale of the summed task vectors (negative: negation)"),
    )

    def merge_tensor(self, key, pretrained, models):
        """θ₀ + λ (Σ θ_i − T·θ₀), accumulated one model at a time."""
        total, count = running_sum(models)
        return total.sub_(pretrained, alpha=count).mul_(self.scaling_factor).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``task_arithmetic``."""
    register("task_arithmetic", "fusionbench_methods.task_arithmetic:TaskArithmetic",
             summary="θ₀ + λ·Σ task vectors (λ=0.3; λ<0 negates)", requirement="data-free")
