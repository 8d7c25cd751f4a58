"""Iso-CTS (Marczak et al. 2025): Iso-C on a common subspace enriched with task-specific directions."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm

from fusionbench_methods._params import scaling_factor


def subspace_sizes(rank: int, fraction: float, tasks: int) -> tuple[int, int]:
    """``(k_c, k_t)``: common directions and directions per task, with k_c + tasks·k_t = rank.

    k_t = ⌊(rank − ⌊fraction·rank⌋)/tasks⌋ and the remainder goes to the common subspace; k_c is at least 1.
    """
    per_task = (rank - max(1, int(fraction * rank))) // tasks
    return rank - tasks * per_task, per_task


class IsoCTS(TensorwiseAlgorithm):
    """Per 2-D weight (r = min(m, n)):

    1. Split the rank (:func:`subspace_sizes`): each task gets k_t = ⌊(r − ⌊f·r⌋)/T⌋ directions and the
       common subspace the rest, k_c = r − T·k_t, so that k_c + T·k_t = r always (the authors' rule: the
       remainder of the division goes to the common subspace). f = ``common_space_fraction``.
    2. Δ = Σ_i τ_i = UΣVᵀ; the common subspace is its top k_c triplets, and each task adds its top k_t
       triplets of τ_i − U_cU_cᵀτ_i (what the common space misses).
    3. Orthogonalize the concatenated U and V (polar factor), and flatten the concatenated singular
       values to their mean σ̄: θ = θ₀ + α·σ̄·U⊥V⊥ᵀ.

    Other tensors: θ₀ + α·mean(τ_i). With f = 1 this is Iso-C. Holds one tensor's T task vectors.
    Defaults f = 0.8, α = 1 (FusionBench).
    """

    name = "iso_cts"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (
        scaling_factor(1.0, "α applied to the isotropic Δ"),
        Hyperparameter("common_space_fraction", float, 0.8, "f, share of the rank given to the common subspace",
                       minimum=0.0, maximum=1.0, minimum_exclusive=True),
    )

    def merge_tensor(self, key, pretrained, models):
        """Iso-CTS of one matrix (or the mean task vector for other shapes)."""
        import torch

        from fusionbench_methods.spectral import decorrelated, mean_delta, svd

        deltas = [tensor - pretrained for tensor in models]
        count = len(deltas)
        total = torch.stack(deltas).sum(0)
        if pretrained.dim() != 2:
            return mean_delta(pretrained, total, count, self.scaling_factor)
        common, per_task = subspace_sizes(min(pretrained.shape), self.common_space_fraction, count)
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
        u_perp, v_perp = decorrelated(us, vs)
        sigma = torch.cat(ss).mean()
        return pretrained + self.scaling_factor * (sigma * (u_perp @ v_perp.mT)).to(pretrained.dtype)


@hookimpl
def register_methods(register):
    """Register ``iso_cts``."""
    register("iso_cts", "fusionbench_methods.iso_cts:IsoCTS",
             summary="Iso-CTS: common + task-specific subspaces, flat spectrum, α=1", requirement="data-free")
