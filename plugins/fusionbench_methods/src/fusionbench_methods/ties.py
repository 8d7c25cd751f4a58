"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint merge, then θ = θ₀ + λ·τ_m."""

from __future__ import annotations

import math

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm

from fusionbench_methods._params import SIGN_METHOD, ZERO_SIGN, density, merge_func, scaling_factor


class Ties(TensorwiseAlgorithm):
    """TIES-Merging.

    1. Trim: keep exactly ⌊density·n⌋ entries of each task vector τ_i = θ_i − θ₀, the largest in
       magnitude (ties at the threshold: the first in tensor, then row-major, order). ``trim=global``
       (the paper) ranks over the whole model's n floating parameters, found in two streaming passes
       without sorting (:class:`~fusionbench_core.engine.selection.StreamingTopK`); ``trim=tensor``
       ranks within each tensor (``kthvalue``), as mergekit does.
    2. Elect and 3. disjoint merge: see :mod:`fusionbench_methods.sign_consensus` (``sign_method``,
       ``merge_func``, ``zero_sign``). Streamed over the models with four running tensors.
    4. θ = θ₀ + λ·τ_m.

    Defaults follow FusionBench (dis-sum, λ = 0.3, k = 20%); the paper's own recipe is
    ``merge_func=mean`` with λ searched in [0.8, 2.5].
    """

    name = "ties"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (
        scaling_factor(0.3, "λ applied to the merged task vector"),
        density(0.2, "Fraction of each task vector kept by magnitude (top-k%, k=20)"),
        Hyperparameter("trim", str, "global", "Rank magnitudes over the whole model (paper) or per tensor",
                       choices=("global", "tensor")),
        merge_func("Disjoint sum (FusionBench) or disjoint mean (paper)"),
        SIGN_METHOD,
        ZERO_SIGN,
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks, unless the zero-sign fallback needs a whole tensor's election."""
        return self.zero_sign != "tensor"

    def prepare(self, pretrained, models, keys):
        """Find each model's trim threshold: whole-model (two streaming passes) or per tensor (one)."""
        from fusionbench_methods.sign_consensus import ModelMajority

        self._majority = ModelMajority()
        self._keepers = find_keepers(self, pretrained, models, keys, self.density, self.trim)

    def merge_tensor(self, key, pretrained, models):
        """Trim each τ_i, fold it into the sign consensus, then merge."""
        from fusionbench_methods.sign_consensus import SignConsensus, consensus_merge

        consensus = SignConsensus(counts=self.merge_func == "mean" or self.sign_method == "frequency")
        for index, tensor in enumerate(models):
            delta = tensor - pretrained
            keeper = self._keepers[index] if self.trim == "global" else self._keepers[(index, key)]
            delta.mul_(keeper(delta.abs()))
            consensus.add(delta)
        return consensus_merge(self, key, pretrained, consensus, sign_method=self.sign_method,
                               merge_func=self.merge_func, zero_sign=self.zero_sign,
                               scaling_factor=self.scaling_factor, majority=self._majority)

    def finalize(self):
        """Patches for tied elections when the model-wide majority is negative."""
        return self._majority.patches()


def find_keepers(method: TensorwiseAlgorithm, pretrained, models, keys, density: float, trim: str):
    """Per-model keep masks for magnitude trimming (see :class:`Ties`); records passes in ``method.cost``."""
    import torch

    from fusionbench_core.engine.selection import StreamingTopK, top_k_keeper

    floating = [k for k in keys if getattr(torch, pretrained.info(k).dtype).is_floating_point]
    if trim == "tensor":
        keepers = {}
        for block, index, delta in method.scan_deltas(pretrained, models, floating, chunked=False):
            keepers[(index, block.key)] = top_k_keeper(delta.abs_(), math.floor(density * delta.numel()))
        method.cost["prepare_passes"] = 1
        return keepers
    total = sum(math.prod(pretrained.info(k).shape) for k in floating)
    selectors = [StreamingTopK(math.floor(density * total)) for _ in models]
    for block, index, delta in method.scan_deltas(pretrained, models, floating):
        selectors[index].observe(delta.abs_())
    passes = 1
    if any(s.needs_refinement for s in selectors):
        passes = 2
        for block, index, delta in method.scan_deltas(pretrained, models, floating):
            selectors[index].refine(delta.abs_())
    method.cost["prepare_passes"] = passes
    return [s.keeper() for s in selectors]


@hookimpl
def register_methods(register):
    """Register ``ties``."""
    register("ties", "fusionbench_methods.ties:Ties",
             summary="TIES: trim top-20% (whole model), elect sign, disjoint merge", requirement="data-free")
