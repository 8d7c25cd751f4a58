"""Majority-vote ensemble: the most frequent of the members' predicted classes."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, Requirement, hookimpl
from fusionbench_core.protocols import Capability


class MajorityVoteEnsemble(BaseAlgorithm):
    """Each fine-tuned model votes for its argmax class; the class with most votes wins.

    Tie rule (fixed): among classes with equally many votes, the lowest class index wins. Acts after the
    task head, so it needs a task pool that scores predictors (see :mod:`.ensemble_model`); its scores
    are the log vote shares (floored at 1e-6 so a loss stays finite; accuracy is the meaningful metric).
    """

    name = "majority_vote_ensemble"
    requirement = Requirement.DATA_FREE
    needs = (Capability.CLASS_LOGITS,)
    hyperparameters = ()

    def run(self, modelpool):
        """Wrap the fine-tuned models with the ``vote`` rule."""
        from .ensemble_model import build_ensemble

        return build_ensemble(self, modelpool, "vote")


@hookimpl
def register_methods(register):
    """Register ``majority_vote_ensemble``."""
    register("majority_vote_ensemble", "fusionbench_data_methods.majority_vote_ensemble:MajorityVoteEnsemble",
             summary="Ensemble: majority vote of the members' predictions (ties: lowest class)",
             requirement="data-free")
