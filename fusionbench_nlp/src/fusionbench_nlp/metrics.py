"""Metrics of the NLP suites, in plain Python: exact-match accuracy and Spearman's rank correlation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fusionbench_core.experiments.stats import average_ranks, spearman

__all__ = ["average_ranks", "exact_match_accuracy", "parse_score", "spearman_rho"]


def exact_match_accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of predictions equal to their target string (after stripping surrounding whitespace)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    if not targets:
        return 0.0
    return sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / len(targets)


def parse_score(text: str) -> float:
    """A generated STS-B score as a float; text that is no number counts as 0.0 (as upstream scores it)."""
    try:
        value = float(text.strip())
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks (ties handled as scipy does).

    Where ρ is undefined (fewer than two values, or a constant side, e.g. a model that generates the
    same score for every pair) this returns 0.0 rather than NaN, so reports stay valid JSON.
    """
    rho = spearman(x, y)
    return 0.0 if rho is None else rho
