"""Simple ensemble: the uniform mean of the fine-tuned models' logits (or probabilities)."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import combine


class SimpleEnsemble(BaseAlgorithm):
    """``F(x) = (1/T) Σ f_i(x)`` over the T fine-tuned models, every member kept (T forward passes per input).

    ``combine=logits`` (default) averages logits; the fused module's ``forward`` returns the mean of the
    members' backbone outputs, which under an affine task head *is* the mean of logits, so every task
    pool can score it. ``combine=probabilities`` averages softmax probabilities, which needs the task
    head and therefore a task pool that scores predictors (see :mod:`.ensemble_model`).
    """

    name = "simple_ensemble"
    requirement = Requirement.DATA_FREE
    needs = (Capability.CLASS_LOGITS,)
    hyperparameters = (
        combine("Average logits or probabilities"),
    )

    def run(self, modelpool):
        """Load every fine-tuned model and wrap them in an :class:`~.ensemble_model.EnsembleModel`."""
        from .ensemble_model import build_ensemble

        return build_ensemble(self, modelpool, self.combine)


@hookimpl
def register_methods(register):
    """Register ``simple_ensemble``."""
    register("simple_ensemble", "fusionbench_data_methods.simple_ensemble:SimpleEnsemble",
             summary="Ensemble: mean of the members' logits (or probabilities)", requirement="data-free")
