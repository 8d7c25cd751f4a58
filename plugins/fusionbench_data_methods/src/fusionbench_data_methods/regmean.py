"""RegMean (Jin et al. 2023): per linear layer, the weights minimising the summed regression error on
each model's own inputs, ``W* = (Σ G̃_i)⁻¹ Σ G̃_i W_i``; every other parameter is averaged."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, DataRequest, Requirement, hookimpl

from ._params import CACHE, alpha, batch_size, examples


class RegMean(BaseAlgorithm):
    """Regression-mean merging of every linear weight (``nn.Linear``, GPT-2's ``Conv1D``) from Gram matrices of its inputs.

    Each model's Grams ``G_i = X_iᵀX_i / n`` are taken on its own task's training inputs (labels are
    not needed), cached on disk by model content and data, so a sweep over ``alpha`` runs the
    forward passes once. Off-diagonal entries are scaled by ``alpha`` before the closed-form solve;
    ``alpha = 1`` is the exact regression solution, ``alpha = 0`` a per-input-feature weighted
    average. Biases, norms, embeddings and any other layer get the plain mean.
    Needs no pretrained model.
    """

    name = "regmean"
    requirement = Requirement.TRAIN_STATISTICS
    data = DataRequest(split="train", examples=256, labelled=False)
    hyperparameters = (
        alpha(0.95, "Scale of the Grams' off-diagonal entries (FusionBench CLIP: 0.95)"),
        examples(256, "Training inputs per task for the Grams"),
        batch_size(32),
        CACHE,
    )

    def run(self, modelpool):
        """Collect each model's Grams, solve every linear layer, average the rest."""
        from .linear_statistics import merge_with_grams, regmean_solve

        alpha = self.alpha
        return merge_with_grams(self, modelpool, lambda key, grams, tensors, orient: regmean_solve(grams, tensors, alpha))


@hookimpl
def register_methods(register):
    """Register ``regmean``."""
    register("regmean", "fusionbench_data_methods.regmean:RegMean",
             summary="RegMean: closed-form regression merge of linear layers from input Grams (α=0.95)",
             requirement="train-statistics")
