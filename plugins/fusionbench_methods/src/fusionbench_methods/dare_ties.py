"""DARE-TIES: DARE's drop-and-rescale in place of TIES' magnitude trim, then TIES' sign election and merge."""

from __future__ import annotations

from fusionbench_core import Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm

from fusionbench_methods._params import DROP_RATE, RESCALE, SIGN_METHOD, ZERO_SIGN, merge_func, scaling_factor


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
        scaling_factor(0.3, "λ applied to the merged task vector"),
        DROP_RATE,
        RESCALE,
        merge_func(),
        SIGN_METHOD,
        ZERO_SIGN,
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks unless a whole-tensor statistic (L1 norm, tensor majority) is needed."""
        return self.rescale != "l1" and self.zero_sign != "tensor"

    def prepare(self, pretrained, models, keys):
        """Start the model-wide sign tally."""
        from fusionbench_methods.sign_consensus import ModelMajority

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
