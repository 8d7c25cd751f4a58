"""Iso-C (Marczak et al. 2025): the summed task vector with an isotropic (flattened) spectrum."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum


class IsoC(TensorwiseAlgorithm):
    """Per 2-D weight: Δ = Σ_i τ_i = UΣVᵀ; θ = θ₀ + α·σ̄·UVᵀ with σ̄ the mean of Δ's singular values.
    Other tensors: θ₀ + α·mean(τ_i) (the average when α = 1).

    Δ is a running sum, so memory is flat in the number of models. Not idempotent by design (the
    spectrum is flattened). α = 1 (FusionBench's default).
    """

    name = "iso_c"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (Hyperparameter("scaling_factor", float, 1.0, "α applied to the isotropic Δ"),)

    def merge_tensor(self, key, pretrained, models):
        """Iso-C of one matrix (or the mean task vector for other shapes)."""
        from fusionbench_methods.spectral import mean_delta, svd

        total, count = running_sum((tensor - pretrained for tensor in models), fresh=True)
        if pretrained.dim() != 2:
            return mean_delta(pretrained, total, count, self.scaling_factor)
        u, s, v = svd(total)
        iso = s.mean() * (u @ v.mT)
        return pretrained + self.scaling_factor * iso.to(pretrained.dtype)


@hookimpl
def register_methods(register):
    """Register ``iso_c``."""
    register("iso_c", "fusionbench_methods.iso_c:IsoC",
             summary="Iso-C: summed task vector with a flat spectrum, α=1", requirement="data-free")
