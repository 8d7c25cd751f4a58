"""DARE over task arithmetic (Yu et al. 2024): drop-and-rescale each task vector, then θ₀ + λ·Σ τ̃_i."""

from __future__ import annotations

from fusionbench_core import Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum

from fusionbench_methods._params import DROP_RATE, RESCALE, scaling_factor


class Dare(TensorwiseAlgorithm):
    """DARE + task arithmetic: τ̃_i = m_i ⊙ τ_i / (1 − p), m_i ~ Bernoulli(1 − p); θ = θ₀ + λ Σ τ̃_i.

    Seeded per tensor (``--seed``): the same seed gives the same bytes. Applied to every floating
    parameter (FusionBench's default; the paper restricts it to linear weights). ``rescale`` picks
    the paper's 1/(1 − p) (default), mergekit's L1-norm matching, or none; see
    :mod:`fusionbench_methods.random_drop`. Memory is flat in the number of models.
    """

    name = "dare"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    hyperparameters = (
        scaling_factor(0.3, "λ applied to the summed dropped task vectors"),
        DROP_RATE,
        RESCALE,
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks, except L1 rescaling, which needs the whole tensor's norm."""
        return self.rescale != "l1"

    def merge_tensor(self, key, pretrained, models):
        """Drop, rescale and sum the task vectors one model at a time."""
        from fusionbench_methods.random_drop import drop_and_rescale

        generator = self.generator(key)
        total, _ = running_sum((drop_and_rescale(tensor - pretrained, self.drop_rate, self.rescale, generator)
                                for tensor in models), fresh=True)
        return total.mul_(self.scaling_factor).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``dare``."""
    register("dare", "fusionbench_methods.dare:Dare",
             summary="DARE: random drop p=0.5, rescale 1/(1-p), task arithmetic", requirement="data-free")
