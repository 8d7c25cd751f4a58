"""Weighted ensemble: Σ w_i f_i(x) with weights normalised to sum to 1 (equal when not given)."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, Hyperparameter, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import combine


class WeightedEnsemble(BaseAlgorithm):
    """The members' logits (or probabilities) combined with weights ``w_i / Σ w``; members with weight 0 never run.

    Weights are given in the pool's model order (``fb modelpools show``); one-hot weights give that
    member exactly. ``combine`` has the same meaning as in ``simple_ensemble``.
    """

    name = "weighted_ensemble"
    requirement = Requirement.DATA_FREE
    needs = (Capability.CLASS_LOGITS,)
    hyperparameters = (
        Hyperparameter("weights", list, None, "One non-negative weight per model, normalised (default: equal)"),
        combine("Weighted mean of logits or of probabilities"),
    )

    def run(self, modelpool):
        """Wrap the fine-tuned models with their weights."""
        from .ensemble_model import build_ensemble
        from .fisher_statistics import merge_weights

        weights = merge_weights(self.weights, len(modelpool.model_names), self.name)
        return build_ensemble(self, modelpool, self.combine, weights)


@hookimpl
def register_methods(register):
    """Register ``weighted_ensemble``."""
    register("weighted_ensemble", "fusionbench_data_methods.weighted_ensemble:WeightedEnsemble",
             summary="Ensemble: weighted mean of logits (or probabilities)", requirement="data-free")
