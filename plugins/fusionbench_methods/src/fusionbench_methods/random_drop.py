"""DARE's random drop-and-rescale of a task vector; a helper of ``dare`` and ``dare_ties`` (not a method).

Pinned definition (Yu et al. 2024, also PEFT): m ~ Bernoulli(1 − p) per entry and τ̃ = m ⊙ τ / (1 − p),
so E[τ̃] = τ (``rescale=inverse``). mergekit instead rescales each tensor so that ‖τ̃‖₁ = ‖τ‖₁
(``rescale=l1``); ``rescale=none`` keeps the survivors as they are. Draws come from the method's
per-tensor CPU generator, so the result is the same on every run and on every device.
"""

from __future__ import annotations

import torch


def drop_and_rescale(delta: torch.Tensor, drop_rate: float, rescale: str, generator: torch.Generator) -> torch.Tensor:
    """Drop entries of ``delta`` in place with probability ``drop_rate`` and rescale the survivors."""
    if drop_rate <= 0.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) >= drop_rate
    if keep.device != delta.device:
        keep = keep.to(delta.device, non_blocking=True)
    if rescale == "l1":
        before = delta.abs().sum()
        delta.mul_(keep)
        after = delta.abs().sum()
        return delta.mul_(torch.where(after > 0, before / after, torch.zeros_like(after)))
    delta.mul_(keep)
    if rescale == "inverse":
        delta.div_(1.0 - drop_rate)
    return delta
