"""MagMax (Marczak et al. 2024): per parameter, the task-vector entry of largest magnitude."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class MagMax(TensorwiseAlgorithm):
    """θ = θ₀ + λ·τ*, τ*[j] = τ_i[j] for the i with the largest |τ_i[j]| (the first such model on ties).

    Streamed with a running selection: memory flat in the number of models. λ = 1 (our default;
    not fixed by methods.md).
    """

    name = "magmax"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    chunkable = True
    hyperparameters = (Hyperparameter("scaling_factor", float, 1.0, "λ applied to the selected task vector"),)

    def merge_tensor(self, key, pretrained, models):
        """Keep, entry by entry, the largest-magnitude task-vector entry seen so far."""
        import torch

        best = None
        for tensor in models:
            delta = tensor - pretrained
            if best is None:
                best = delta
                continue
            best = torch.where(delta.abs() > best.abs(), delta, best)
        return best.mul_(self.scaling_factor).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``magmax``."""
    register("magmax", "fusionbench_methods.magmax:MagMax",
             summary="MagMax: per entry the largest-magnitude task vector, λ=1", requirement="data-free")
