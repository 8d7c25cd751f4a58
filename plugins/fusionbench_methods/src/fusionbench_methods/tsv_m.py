"""TSV-M (Gargiulo et al. 2025): merge task vectors through their decorrelated task singular vectors."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class TaskSingularVectorsMerge(TensorwiseAlgorithm):
    """Per 2-D weight: τ_i = U_iΣ_iV_iᵀ; keep each task's top k = max(1, ⌊r/T⌋) triplets (r = min(m, n));
    concatenate U = [U_1…U_T], Σ = blockdiag, V likewise; orthogonalize U⊥ = PQᵀ from SVD(U) = PSQᵀ (same
    for V); Δ = U⊥ΣV⊥ᵀ; θ = θ₀ + α·Δ. Other tensors: θ₀ + α·mean(τ_i).

    Holds the T task vectors of one tensor at a time. Not idempotent by design: T copies of one
    model give duplicated singular vectors. α = 1 (FusionBench's default).
    """

    name = "tsv_m"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (Hyperparameter("scaling_factor", float, 1.0, "α applied to the merged Δ"),)
    lambda_linear = "scaling_factor"
    """θ = θ₀ + α·Δ with Δ free of α: a sweep over α computes Δ once (fusionbench_core.experiments.reuse)."""

    def merge_tensor(self, key, pretrained, models):
        """TSV-M of one matrix (or the mean task vector for other shapes)."""
        import torch

        from fusionbench_methods.spectral import decorrelated, mean_delta, svd

        deltas = [tensor - pretrained for tensor in models]
        count = len(deltas)
        if pretrained.dim() != 2:
            return mean_delta(pretrained, torch.stack(deltas).sum(0), count, self.scaling_factor)
        k = max(1, min(pretrained.shape) // count)
        us, ss, vs = [], [], []
        for delta in deltas:
            u, s, v = svd(delta)
            us.append(u[:, :k])
            ss.append(s[:k])
            vs.append(v[:, :k])
        del deltas
        u_perp, v_perp = decorrelated(us, vs)
        merged = (u_perp * torch.cat(ss)) @ v_perp.mT
        return pretrained + self.scaling_factor * merged.to(pretrained.dtype)


@hookimpl
def register_methods(register):
    """Register ``tsv_m``."""
    register("tsv_m", "fusionbench_methods.tsv_m:TaskSingularVectorsMerge",
             summary="TSV-M: task singular vectors, decorrelated, α=1", requirement="data-free")
