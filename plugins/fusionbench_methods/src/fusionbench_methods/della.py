"""DELLA (Deep et al. 2024): magnitude-ranked stochastic drop (MagPrune), then TIES' election or a plain sum."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError

from fusionbench_methods._params import ZERO_SIGN, density, merge_func, scaling_factor


def keep_probabilities(delta, density: float, epsilon: float):
    """Per row, q = (d − ε) + 2ε·rank/(n − 1), rank 0 for the smallest |τ| (q = d for a 1-entry row).

    Rows are the last dimension (a vector is one row, a scalar one entry); equal magnitudes get
    consecutive ranks in index order.
    """
    import torch

    rows = delta.reshape(1, 1) if delta.dim() == 0 else delta.reshape(-1, delta.shape[-1])
    n = rows.shape[-1]
    if n == 1:
        return torch.full_like(delta, density)
    order = rows.abs().argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(n, device=delta.device).expand_as(order))
    q = (density - epsilon) + (2 * epsilon / (n - 1)) * ranks.to(delta.dtype)
    return q.reshape(delta.shape)


class Della(TensorwiseAlgorithm):
    """DELLA-Merging.

    For each model and row of each tensor, keep entry j with probability q_j (see
    :func:`keep_probabilities`: in [d − ε, d + ε], rising with |τ|), rescale survivors by 1/q_j
    (the paper; ``rescale=false`` keeps them as they are), then either TIES' sign election and
    disjoint merge (``sign_consensus=true``, mergekit's ``della``; tied elections as ``zero_sign``
    says, see :mod:`fusionbench_methods.sign_consensus`) or a plain sum (``della_linear``),
    and θ = θ₀ + λ·τ_m. Seeded per tensor. Row blocks (unless ``zero_sign=tensor``), constant memory
    in the number of models.
    Defaults d = 0.7, ε = 0.15 (mergekit's ε), λ = 0.3 (as task arithmetic) are our choices.
    """

    name = "della"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = (
        scaling_factor(0.3, "λ applied to the merged task vector"),
        density(0.7, "d, the mean keep probability"),
        Hyperparameter("epsilon", float, 0.15, "ε, half-width of the keep probabilities around d",
                       minimum=0.0, maximum=0.5),
        Hyperparameter("rescale", bool, True, "Divide survivors by their keep probability (paper)"),
        Hyperparameter("sign_consensus", bool, True, "TIES election + disjoint merge (della) or plain sum (della_linear)"),
        merge_func("Disjoint sum or mean (with sign_consensus)"),
        ZERO_SIGN,
    )

    @property
    def chunkable(self) -> bool:
        """Row blocks, unless the zero-sign fallback needs a whole tensor's election."""
        return not (self.sign_consensus and self.zero_sign == "tensor")

    def validate(self) -> None:
        """Check that [d − ε, d + ε] is a probability range (a cross-field check, run at construction)."""
        if self.density - self.epsilon < 0 or self.density + self.epsilon > 1:
            raise ConfigError(f"hyperparameters 'della.density' ± 'della.epsilon' must stay in [0, 1], "
                              f"got {self.density} ± {self.epsilon}")

    def prepare(self, pretrained, models, keys):
        """Start the model-wide sign tally."""
        from fusionbench_methods.sign_consensus import ModelMajority

        self._majority = ModelMajority()

    def merge_tensor(self, key, pretrained, models):
        """MagPrune each τ_i, then consensus or sum."""
        import torch

        from fusionbench_methods.sign_consensus import SignConsensus, consensus_merge

        generator = self.generator(key)
        consensus = SignConsensus(counts=self.merge_func == "mean")
        total = None
        for tensor in models:
            delta = tensor - pretrained
            q = keep_probabilities(delta, self.density, self.epsilon)
            draws = torch.rand(delta.shape, generator=generator, dtype=torch.float32).to(delta.device)
            keep = draws < q
            delta.mul_(keep)
            if self.rescale:
                delta.div_(torch.where(keep, q, torch.ones_like(q)))
            if self.sign_consensus:
                consensus.add(delta)
            else:
                total = delta if total is None else total.add_(delta)
        if not self.sign_consensus:
            return total.mul_(self.scaling_factor).add_(pretrained)
        return consensus_merge(self, key, pretrained, consensus, sign_method="total", merge_func=self.merge_func,
                               zero_sign=self.zero_sign, scaling_factor=self.scaling_factor, majority=self._majority)

    def finalize(self):
        """Patches for tied elections when the model-wide majority is negative."""
        return self._majority.patches()


@hookimpl
def register_methods(register):
    """Register ``della``."""
    register("della", "fusionbench_methods.della:Della",
             summary="DELLA: magnitude-ranked random drop (MagPrune), TIES election, λ", requirement="data-free")
