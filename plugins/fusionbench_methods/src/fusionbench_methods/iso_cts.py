"""Iso-CTS (Marczak et al. 2025): Iso-C on a common subspace enriched with task-specific directions."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError


class IsoCTS(TensorwiseAlgorithm):
    """Per 2-D weight (r = min(m, n)):

    1. Δ = Σ_i τ_i = UΣVᵀ; the common subspace is its top k_c = ⌊f·r⌋ triplets (f = ``common_space_fraction``).
    2. Each task adds its top ⌊(r − k_c)/T⌋ triplets of τ_i − U_cU_cᵀτ_i (what the common space misses).
    3. Orthogonalize the concatenated U and V (polar factor), and flatten the concatenated singular
       values to their mean σ̄: θ = θ₀ + α·σ̄·U⊥V⊥ᵀ.

    Other tensors: θ₀ + α·mean(τ_i). With f = 1 this is Iso-C. Holds one tensor's T task vectors.
    Defaults f = 0.8, α = 1 (FusionBench).
    """

    name = "iso_cts"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (
        Hyperparameter("scaling_factor", float, 1.0, "α applied to the isotropic Δ"),
        Hyperparameter("common_space_fraction", float, 0.8, "f, share of the rank given to the common subspace"),
    )

    def prepare(self, pretrained, models, keys):
        """Validate f."""
        if not 0.0 < self.common_space_fraction <= 1.0:
            raise ConfigError(f"hyperparameter 'iso_cts.common_space_fraction' must lie in (0, 1], "
                              f"got {self.common_space_fraction}")

    def merge_tensor(self, key, pretrained, models):
        """Iso-CTS of one matrix (or the mean task vector for other shapes)."""
        import torch

        from fusionbench_methods.spectral import mean_delta, orthogonalize, svd

        deltas = [tensor - pretrained for tensor in models]
        count = len(deltas)
        total = torch.stack(deltas).sum(0)
        if pretrained.dim() != 2:
            return mean_delta(pretrained, total, count, self.scaling_factor)
        rank = min(pretrained.shape)
        common = max(1, int(self.common_space_fraction * rank))
        per_task = (rank - common) // count
        u, s, v = svd(total)
        us, ss, vs = [u[:, :common]], [s[:common]], [v[:, :common]]
        if per_task > 0:
            projector = us[0]
            for delta in deltas:
                d = delta.double()
                residual = d - projector @ (projector.mT @ d)
                ru, rs, rv = svd(residual)
                us.append(ru[:, :per_task])
                ss.append(rs[:per_task])
                vs.append(rv[:, :per_task])
        del deltas
        u_perp = orthogonalize(torch.cat(us, dim=1))
        v_perp = orthogonalize(torch.cat(vs, dim=1))
        sigma = torch.cat(ss).mean()
        return pretrained + self.scaling_factor * (sigma * (u_perp @ v_perp.mT)).to(pretrained.dtype)


@hookimpl
def register_methods(register):
    """Register ``iso_cts``."""
    register("iso_cts", "fusionbench_methods.iso_cts:IsoCTS",
             summary="Iso-CTS: common + task-specific subspaces, flat spectrum, α=1", requirement="data-free")
