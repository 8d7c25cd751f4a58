"""RegMean++ (Nguyen et al. 2025): RegMean whose Grams for each layer are taken on the inputs the
*merged* lower layers produce, layer group by layer group."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, DataRequest, Hyperparameter, Requirement, hookimpl
from fusionbench_core.errors import ConfigError


class RegMeanPlusPlus(BaseAlgorithm):
    """RegMean with cross-layer dependence: Grams of layer group ``g`` of model ``i`` come from task ``i``'s
    training inputs run through the already merged layers below ``g`` (see :mod:`.sequential_regmean`).

    The first group's Grams equal RegMean's; a single model comes back unchanged. Costs about
    ``groups / 2`` forward passes per example and model (each pass stops at its group) and keeps every
    fine-tuned model in memory. Its Grams depend on ``alpha`` through the merged lower layers, so they
    are not cached. Needs no pretrained model.
    """

    name = "regmean_plusplus"
    requirement = Requirement.TRAIN_STATISTICS
    data = DataRequest(split="train", examples=256, labelled=False)
    hyperparameters = (
        Hyperparameter("alpha", float, 0.95, "Scale of the Grams' off-diagonal entries"),
        Hyperparameter("examples", int, 256, "Training inputs per task for the Grams"),
        Hyperparameter("batch_size", int, 32, "Inputs per forward pass"),
    )

    def run(self, modelpool):
        """Merge group by group in execution order."""
        from .sequential_regmean import regmean_plusplus

        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"hyperparameter 'regmean_plusplus.alpha' must lie in [0, 1], got {self.alpha}")
        return regmean_plusplus(self, modelpool)


@hookimpl
def register_methods(register):
    """Register ``regmean_plusplus``."""
    register("regmean_plusplus", "fusionbench_data_methods.regmean_plusplus:RegMeanPlusPlus",
             summary="RegMean++: RegMean with Grams from the merged lower layers, layer by layer",
             requirement="train-statistics")
