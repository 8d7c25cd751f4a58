"""TIES' sign election and disjoint merge, streamed over the models with constant memory in N.

Not a method: a helper shared by ``ties``, ``dare_ties`` and ``della``. Each model's (already
trimmed or dropped) task vector is folded into four running tensors — sum and count of its positive
entries, sum and count of its negative entries — which is all that election and disjoint merging
need, so memory does not grow with the number of models:

- ``sign_method="total"`` (the paper, Yadav et al. 2023): γ = sgn(Σ_i τ̂_i), the sign of the total mass.
- ``sign_method="frequency"`` (PEFT's option): γ = the sign held by more models.
- Disjoint merge over A_j = {i : τ̂_i[j] ≠ 0, sgn τ̂_i[j] = γ_j}: ``"sum"`` Σ_{A_j} τ̂_i[j] or
  ``"mean"`` that sum divided by |A_j| (0 where A_j is empty).
- Where the election is a tie (γ_j = 0 although some τ̂_i[j] ≠ 0: the positive and negative mass
  cancel with ``total``, or as many models hold + as − with ``frequency``) the entry takes a fallback
  sign, and the disjoint merge then runs over the entries of that sign:
  ``zero_sign="model"`` (the paper) the majority of the elected signs over the whole model, which is
  only known at the end, so those rare entries are merged with + first and patched afterwards;
  ``zero_sign="tensor"`` (git-theta's default) the majority of elected signs in the same tensor;
  ``zero_sign="plus"`` always + (PEFT's ``calculate_majority_sign_mask`` and mergekit, which elect
  ``sign_magnitude >= 0`` → +). A majority that is itself tied resolves to +.
"""

from __future__ import annotations

import torch


class SignConsensus:
    """Running statistics of one tensor (block) over the models' trimmed task vectors.

    Always: the total Σ τ̂_i and the positive mass Σ max(τ̂_i, 0) (the negative mass is their
    difference). Only when ``counts`` is true (disjoint mean, or election by frequency): the number of
    positive and of non-zero entries. Three or five tensor ops per model instead of eight.
    """

    def __init__(self, counts: bool = True):
        self.counts = counts
        self.total: torch.Tensor | None = None
        self.pos_sum: torch.Tensor | None = None
        self.pos_count: torch.Tensor | None = None
        self.nonzero_count: torch.Tensor | None = None

    def add(self, delta: torch.Tensor) -> None:
        """Fold in one model's trimmed task vector (zeros are dropped entries)."""
        if self.total is None:
            self.total = delta.clone()
            self.pos_sum = delta.clamp(min=0)
            if self.counts:
                self.pos_count = (delta > 0).to(torch.int32)
                self.nonzero_count = (delta != 0).to(torch.int32)
            return
        self.total.add_(delta)
        self.pos_sum.add_(delta.clamp(min=0))
        if self.counts:
            self.pos_count.add_(delta > 0)
            self.nonzero_count.add_(delta != 0)

    @property
    def neg_sum(self) -> torch.Tensor:
        """Σ min(τ̂_i, 0)."""
        return self.total - self.pos_sum

    def elect(self, sign_method: str) -> torch.Tensor:
        """γ ∈ {−1, 0, +1} per entry."""
        if sign_method == "total":
            return torch.sign(self.total)
        return torch.sign(2 * self.pos_count - self.nonzero_count).to(self.total.dtype)

    def merge(self, sign: torch.Tensor, merge_func: str, positive: bool | torch.Tensor) -> torch.Tensor:
        """The disjoint merge where γ is given, ties resolved to ``positive`` (+ if true, − if false)."""
        take_pos = (sign > 0) | ((sign == 0) & torch.as_tensor(positive, device=sign.device))
        total = torch.where(take_pos, self.pos_sum, self.neg_sum)
        if merge_func == "sum":
            return total
        count = torch.where(take_pos, self.pos_count, self.nonzero_count - self.pos_count)
        return torch.where(count > 0, total / count.clamp(min=1).to(total.dtype), torch.zeros_like(total))

    def ambiguous(self, sign: torch.Tensor) -> torch.Tensor:
        """Entries whose election tied although some model has a non-zero entry there."""
        if self.counts:
            return (sign == 0) & (self.nonzero_count > 0)
        return (sign == 0) & (self.pos_sum != 0)


class ModelMajority:
    """Collects the whole model's elected signs and the tied entries to patch at the end."""

    def __init__(self):
        self.positive = 0
        self.negative = 0
        self.pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def count(self, sign: torch.Tensor) -> None:
        """Add one block's elected signs to the model-wide tally."""
        self.positive += int((sign > 0).sum())
        self.negative += int((sign < 0).sum())

    def defer(self, key: str, flat_index: torch.Tensor, values_if_negative: torch.Tensor) -> None:
        """Remember the value a tied entry takes if the model majority turns out negative."""
        self.pending.append((key, flat_index.cpu(), values_if_negative.cpu()))

    def patches(self):
        """Patches to apply: none when the majority is + (entries were merged with +)."""
        if self.positive >= self.negative:
            return []
        return list(self.pending)


def consensus_merge(method, key: str, pretrained: torch.Tensor, consensus: SignConsensus, *,
                    sign_method: str, merge_func: str, zero_sign: str, scaling_factor: float,
                    majority: ModelMajority) -> torch.Tensor:
    """θ₀ + λ·(disjoint merge), with the zero-sign fallback of ``zero_sign`` (see module docstring)."""
    if consensus.total is None:
        return pretrained
    sign = consensus.elect(sign_method)
    if zero_sign == "plus":
        return pretrained + scaling_factor * consensus.merge(sign, merge_func, True)
    if zero_sign == "tensor":
        positive = int((sign > 0).sum()) >= int((sign < 0).sum())
        return pretrained + scaling_factor * consensus.merge(sign, merge_func, positive)
    majority.count(sign)
    merged = pretrained + scaling_factor * consensus.merge(sign, merge_func, True)
    tied = consensus.ambiguous(sign).view(-1).nonzero().view(-1)
    if tied.numel():
        alternative = consensus.merge(sign, merge_func, False).view(-1)[tied]
        values = pretrained.view(-1)[tied] + scaling_factor * alternative
        offset = method.block.offset if method.block is not None else 0
        majority.defer(key, tied + offset, values)
    return merged
