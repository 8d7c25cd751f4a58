"""Exact top-k selection without sorting: per tensor (``kthvalue``) and streamed over a whole model.

Both pin the same rule: keep exactly ``k`` entries, the ``k`` largest values, and among entries
equal to the threshold keep the first ones in stream order (tensor order, then row-major order), so
the kept count is exactly ``k`` even with ties.

:class:`StreamingTopK` finds the k-th largest of a stream of non-negative values in two passes with
a few hundred KiB of state: pass 1 histograms the values on the top 16 bits of their float32 bit
pattern (an order-preserving key for non-negative floats: 8 exponent and 7 mantissa bits, a relative
bucket width of 2⁻⁷); the bucket holding the k-th largest is then known exactly, and pass 2 collects
only the values in that bucket (typically well under 1% of them) and takes their exact k-th value.
"""

from __future__ import annotations

import torch

BUCKETS = 1 << 16
_SHIFT = 15


def _bucket(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float32).view(torch.int32) >> _SHIFT


class KeepMask:
    """Turns a threshold and a tie quota into keep masks, block after block in stream order."""

    def __init__(self, threshold: float, tie_quota: int, keep_all: bool = False):
        self.threshold = threshold
        self.tie_quota = tie_quota
        self.keep_all = keep_all

    def __call__(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Mask of the entries to keep in this block (consumes the tie quota)."""
        if self.keep_all:
            return torch.ones_like(magnitudes, dtype=torch.bool)
        mask = magnitudes > self.threshold
        if self.tie_quota > 0:
            equal = (magnitudes == self.threshold).view(-1).nonzero().view(-1)[: self.tie_quota]
            if equal.numel():
                mask.view(-1)[equal] = True
                self.tie_quota -= equal.numel()
        return mask


def top_k_keeper(magnitudes: torch.Tensor, k: int) -> KeepMask:
    """A :class:`KeepMask` keeping exactly the ``k`` largest of ``magnitudes`` (one tensor, via ``kthvalue``)."""
    n = magnitudes.numel()
    if k >= n:
        return KeepMask(0.0, 0, keep_all=True)
    if k <= 0:
        return KeepMask(float("inf"), 0)
    flat = magnitudes.reshape(-1)
    threshold = flat.kthvalue(n - k + 1).values
    greater = int((flat > threshold).sum())
    return KeepMask(float(threshold), k - greater)


def top_k_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the ``k`` largest entries (ties: the first in row-major order)."""
    return top_k_keeper(magnitudes, k)(magnitudes)


class StreamingTopK:
    """The exact k-th largest of a stream of non-negative values, in two passes (see module docstring).

    Call :meth:`observe` on every block in pass 1, :meth:`refine` on the same blocks in pass 2, then
    :meth:`keeper` for the :class:`KeepMask` to apply in the same order.
    """

    def __init__(self, k: int):
        self.k = k
        self.count = 0
        self.histogram = torch.zeros(BUCKETS, dtype=torch.int64)
        self._target: int | None = None
        self._above = 0
        self._collected: torch.Tensor | None = None
        self._filled = 0

    def observe(self, magnitudes: torch.Tensor) -> None:
        """Pass 1: count the block's values per bucket."""
        self.count += magnitudes.numel()
        counts = torch.bincount(_bucket(magnitudes).view(-1), minlength=BUCKETS)
        self.histogram += counts[:BUCKETS].cpu()

    @property
    def needs_refinement(self) -> bool:
        """Whether pass 2 is needed (not when nothing or everything is kept)."""
        return 0 < self.k < self.count

    def _locate(self) -> None:
        if self._target is None:
            above = torch.flip(self.histogram, [0]).cumsum(0)
            index = int(torch.searchsorted(above, torch.tensor(self.k)))
            self._target = BUCKETS - 1 - index
            self._above = int(above[index - 1]) if index > 0 else 0
            # One buffer of exactly the bucket's size: many small kept tensors would fragment the heap.
            self._bucket_count = int(self.histogram[self._target])
            self.histogram = torch.zeros(0, dtype=torch.int64)

    def refine(self, magnitudes: torch.Tensor) -> None:
        """Pass 2: keep the block's values that fall in the bucket of the k-th largest."""
        self._locate()
        flat = magnitudes.reshape(-1)
        hits = flat[_bucket(flat) == self._target]
        if hits.numel():
            if self._collected is None:
                self._collected = torch.empty(self._bucket_count, dtype=hits.dtype)
            self._collected[self._filled:self._filled + hits.numel()] = hits.cpu()
            self._filled += hits.numel()

    def keeper(self) -> KeepMask:
        """The threshold and tie quota that keep exactly ``k`` values over the whole stream."""
        if self.k >= self.count:
            return KeepMask(0.0, 0, keep_all=True)
        if self.k <= 0:
            return KeepMask(float("inf"), 0)
        self._locate()
        candidates = self._collected[: self._filled] if self._collected is not None else torch.zeros(0)
        self._collected = None
        need = self.k - self._above
        threshold = candidates.kthvalue(candidates.numel() - need + 1).values
        greater = self._above + int((candidates > threshold).sum())
        return KeepMask(float(threshold), self.k - greater)
