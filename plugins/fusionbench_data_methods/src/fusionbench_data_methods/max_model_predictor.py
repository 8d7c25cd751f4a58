"""Max-model predictor: h(x, y) = max_i p_i(y | x), the class some member is most confident in."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, Requirement, hookimpl
from fusionbench_core.protocols import Capability


class MaxModelPredictor(BaseAlgorithm):
    """Predict ``argmax_y max_i p_i(y|x)`` over the fine-tuned models' softmax probabilities.

    Acts after the task head, so it needs a task pool that scores predictors (see :mod:`.ensemble_model`);
    its scores are ``log max_i p_i(y|x)``.
    """

    name = "max_model_predictor"
    requirement = Requirement.DATA_FREE
    needs = (Capability.CLASS_LOGITS,)
    hyperparameters = ()

    def run(self, modelpool):
        """Wrap the fine-tuned models with the ``max`` rule."""
        from .ensemble_model import build_ensemble

        return build_ensemble(self, modelpool, "max")


@hookimpl
def register_methods(register):
    """Register ``max_model_predictor``."""
    register("max_model_predictor", "fusionbench_data_methods.max_model_predictor:MaxModelPredictor",
             summary="Ensemble: class of the most confident member (max over members' probabilities)",
             requirement="data-free")
