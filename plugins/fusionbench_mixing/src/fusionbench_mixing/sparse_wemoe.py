"""Sparse WEMoE (E-WEMoE, Shen et al. 2024): WEMoE over magnitude-pruned task vectors."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, hookimpl

from .wemoe import WeightEnsemblingMoE


class SparseWeightEnsemblingMoE(WeightEnsemblingMoE):
    """WEMoE whose experts keep only the largest-magnitude ``1 − sparsity`` of each task vector.

    Per task and per MLP parameter tensor, the ``⌈(1 − sparsity)·n⌉`` entries of largest ``|τ|`` are kept
    and the rest set to 0; everything else is WEMoE. The report's
    ``task_vector_density`` gives the fraction kept.
    """

    name = "sparse_wemoe"
    hyperparameters = (
        Hyperparameter("sparsity", float, 0.9, "Fraction of each MLP task vector set to zero (upstream: 0.9)",
                       minimum=0.0, maximum=1.0, maximum_exclusive=True),
        *WeightEnsemblingMoE.hyperparameters,
    )

    def prepare_task_vectors(self, vectors):
        """Each ``(T, *shape)`` stack pruned task by task to its largest ``1 − sparsity`` magnitudes."""
        import math

        import torch

        pruned = {}
        for key, stack in vectors.items():
            flat = stack.reshape(stack.shape[0], -1)
            keep = max(1, math.ceil((1.0 - self.sparsity) * flat.shape[1]))
            index = flat.abs().topk(keep, dim=1, sorted=False).indices
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, index, True)
            pruned[key] = (flat * mask).reshape(stack.shape)
        return pruned

    def finish(self, modelpool, model, meter, **extra):
        """WEMoE's report plus the fraction of task-vector entries kept."""
        return super().finish(modelpool, model, meter, task_vector_density=round(1.0 - self.sparsity, 6), **extra)


@hookimpl
def register_methods(register):
    """Register ``sparse_wemoe``."""
    register("sparse_wemoe", "fusionbench_mixing.sparse_wemoe:SparseWeightEnsemblingMoE",
             aliases=("sparse_we_moe", "e_wemoe"),
             summary="Sparse WEMoE: WEMoE over magnitude-pruned task vectors (90% sparsity)", requirement="test-time")
