"""DARE-TIES: DARE's drop-and-rescale in place of TIES' magnitude trim, then TIES' sign election and merge."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm


class DareTies(TensorwiseAlgorithm):
    """τ̃_i = DARE(τ_i) (see ``dare``), then elect signs and disjoint-merge as TIES does; θ = θ₀ + λ·τ_m.

    Seeded per tensor; sign election options as in ``ties`` (:mod:`fusionbench_methods.sign_consensus`).
    Memory is flat in the number of models.
    """

    name = "dare_ties"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    hyperparameters = (
        Hyperparameter("scaling_factor", float, 0.3, "λ applied to the merged task vector"),
        Hyperparameter("drop_rate", float, 0.5, "p, the probability of dropping each entry"),
        Hyperparameter("rescale", str, "inverse", "Survivor rescaling: 1/(1-p) (paper), l1 (mergekit), none",
                       choices=("inverse", "l1", "none")),
        Hyperparameter("merge_func", str, "sum", "Disjoint sum or disjoint mean", choices=("sum", "mean")),
        Hyperparameter("sign_method", str, "total", "Elect by total mass (paper) or by count (PEFT 'frequency')",
                       choices=("total", "frequency")),
        Hyperparameter("zero_sign", str, "model", "Sign for tied elections: whole-model or tensor majority",
                       choices=("model", "tensor")),
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks unless a whole-tensor statistic (L1 norm, tensor majority) is needed."""
        return self.rescale != "l1" and self.zero_sign != "tensor"

    def prepare(self, pretrained, models, keys):
        """Validate p; start the model-wide sign tally."""
        from fusionbench_methods.dare import check_drop_rate
        from fusionbench_methods.sign_consensus import ModelMajority

        check_drop_rate(self.name, self.drop_rate)
        self._majority = ModelMajority()

    def merge_tensor(self, key, pretrained, models):
        """Drop and rescale each τ_i, fold it into the sign consensus, then merge."""
        from fusionbench_methods.random_drop import drop_and_rescale
        from fusionbench_methods.sign_consensus import SignConsensus, consensus_merge

        generator = self.generator(key)
        consensus = SignConsensus(counts=self.merge_func == "mean" or self.sign_method == "frequency")
        for tensor in models:
            consensus.add(drop_and_rescale(tensor - pretrained, self.drop_rate, self.rescale, generator))
        return consensus_merge(self, key, pretrained, consensus, sign_method=self.sign_method,
                               merge_func=self.merge_func, zero_sign=self.zero_sign,
                               scaling_factor=self.scaling_factor, majority=self._majority)

    def finalize(self):
        """Patches for tied elections when the model-wide majority is negative."""
        return self._majority.patches()


@hookimpl
def register_methods(register):
    """Register ``dare_ties``."""
    register("dare_ties", "fusionbench_methods.dare_ties:DareTies",
             summary="DARE drop-and-rescale, then TIES sign election and disjoint merge", requirement="data-free")
