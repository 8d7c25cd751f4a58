"""DARE over task arithmetic (Yu et al. 2024): drop-and-rescale each task vector, then θ₀ + λ·Σ τ̃_i."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError


def check_drop_rate(owner: str, value: float) -> None:
    """Raise unless 0 ≤ p < 1."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"hyperparameter '{owner}.drop_rate' must lie in [0, 1), got {value}")


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
        Hyperparameter("scaling_factor", float, 0.3, "λ applied to the summed dropped task vectors"),
        Hyperparameter("drop_rate", float, 0.5, "p, the probability of dropping each entry"),
        Hyperparameter("rescale", str, "inverse", "Survivor rescaling: 1/(1-p) (paper), l1 (mergekit), none",
                       choices=("inverse", "l1", "none")),
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks, except L1 rescaling, which needs the whole tensor's norm."""
        return self.rescale != "l1"

    def prepare(self, pretrained, models, keys):
        """Validate p."""
        check_drop_rate(self.name, self.drop_rate)

    def merge_tensor(self, key, pretrained, models):
        """Drop, rescale and sum the task vectors one model at a time."""
        from fusionbench_methods.random_drop import drop_and_rescale

        generator = self.generator(key)
        total = None
        for tensor in models:
            delta = drop_and_rescale(tensor - pretrained, self.drop_rate, self.rescale, generator)
            total = delta if total is None else total.add_(delta)
        return total.mul_(self.scaling_factor).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``dare``."""
    register("dare", "fusionbench_methods.dare:Dare",
             summary="DARE: random drop p=0.5, rescale 1/(1-p), task arithmetic", requirement="data-free")
