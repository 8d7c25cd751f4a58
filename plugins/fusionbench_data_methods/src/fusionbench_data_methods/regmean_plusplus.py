"""RegMean++ (Nguyen et al. 2025): RegMean whose Grams for each layer are taken on the inputs the
*merged* lower layers produce, layer group by layer group."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, DataRequest, Requirement, hookimpl

from ._params import alpha, batch_size, examples


class RegMeanPlusPlus(BaseAlgorithm):
    """RegMean with cross-layer dependence: Grams of layer group ``g`` (a transformer block) of model ``i``
    come from model ``i``'s own block ``g`` run on task ``i``'s training inputs passed through the already
    merged layers below ``g`` (see :mod:`.sequential_regmean`); the block's other parameters (its norms)
    are averaged once the block is merged.

    The first group's Grams equal RegMean's only when the models agree on everything before it (its
    inputs are then the same); the embeddings are merged first, so they differ whenever the
    embeddings do. A single model comes back unchanged. Costs about
    ``groups / 2`` forward passes per example and model (each pass stops at its group) and keeps every
    fine-tuned model in memory. Its Grams depend on ``alpha`` through the merged lower layers, so they
    are not cached. Needs no pretrained model.
    """

    name = "regmean_plusplus"
    requirement = Requirement.TRAIN_STATISTICS
    data = DataRequest(split="train", examples=256, labelled=False)
    hyperparameters = (
        alpha(0.95, "Scale of the Grams' off-diagonal entries"),
        examples(256, "Training inputs per task for the Grams"),
        batch_size(32),
    )

    def run(self, modelpool):
        """Merge group by group in execution order."""
        from .sequential_regmean import regmean_plusplus

        return regmean_plusplus(self, modelpool)


@hookimpl
def register_methods(register):
    """Register ``regmean_plusplus``."""
    register("regmean_plusplus", "fusionbench_data_methods.regmean_plusplus:RegMeanPlusPlus",
             summary="RegMean++: RegMean with Grams from the merged lower layers, layer by layer",
             requirement="train-statistics")
