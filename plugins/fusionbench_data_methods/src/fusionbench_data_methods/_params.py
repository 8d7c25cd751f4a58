"""Hyperparameters shared by several data methods, declared once with their ranges.

Not a method. Torch-free, so declaring a method's hyperparameters imports nothing heavy. Ranges are
checked by :meth:`Hyperparameter.parse` when a method is constructed, so ``fb run --dry-run``
rejects out-of-range values.
"""

from __future__ import annotations

from fusionbench_core import Hyperparameter

COMBINES = ("logits", "probabilities")


def examples(default: int | None, help: str) -> Hyperparameter:
    """Inputs (or examples) per task: at least 1; ``None`` (where allowed) means all."""
    return Hyperparameter("examples", int, default, help, minimum=1)


def batch_size(default: int, help: str = "Inputs per forward pass") -> Hyperparameter:
    """Inputs per forward pass: at least 1."""
    return Hyperparameter("batch_size", int, default, help, minimum=1)


CACHE = Hyperparameter("cache", bool, True, "Reuse statistics cached on disk (keyed by model content and data)")


def alpha(default: float, help: str) -> Hyperparameter:
    """RegMean's scale of the Grams' off-diagonal entries: [0, 1]."""
    return Hyperparameter("alpha", float, default, help, minimum=0.0, maximum=1.0)


def combine(help: str) -> Hyperparameter:
    """What an ensemble averages: logits or probabilities."""
    return Hyperparameter("combine", str, "logits", help, choices=COMBINES)
