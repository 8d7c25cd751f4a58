"""Statistics of results: paired statistics of two runs on the same test examples (``fb compare``), and correlations.

The statistic is the difference of average accuracy, A − B, where the average is over tasks of each
task's accuracy (as ``fb run`` reports it). The paired bootstrap resamples, within each task
independently, the examples with replacement (the same indices for A and B, so the pairing is kept)
and recomputes the statistic; the interval is the percentile interval of those resamples:

- ``lower = sorted[floor(R · α / 2)]`` and ``upper = sorted[ceil(R · (1 − α / 2)) − 1]`` with
  ``α = 1 − level`` and ``R`` resamples;
- ``p_value`` is the two-sided bootstrap p-value ``min(1, 2 · min(P(stat ≤ 0), P(stat ≥ 0)))``.

:func:`pearson`, :func:`average_ranks` and :func:`spearman` are the correlations the suites report
(held-in against held-out accuracy, STS-B's Spearman ρ).

Only the standard library is used (``random.Random(seed)``), so the same inputs and seed give the
same interval everywhere.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import FusionBenchError

__all__ = ["average_ranks", "paired_bootstrap", "paired_differences", "pearson", "spearman"]


def paired_differences(a: Mapping[str, Mapping[str, Sequence[int]]], b: Mapping[str, Mapping[str, Sequence[int]]],
                       *, names: tuple[str, str] = ("A", "B")) -> dict[str, list[int]]:
    """Per task, ``correct_A[i] − correct_B[i]`` (in {-1, 0, 1}) from two runs' stored predictions.

    ``a`` and ``b`` are ``{task: {"predicted": [...], "target": [...]}}``; the tasks both have are
    paired, and their targets must agree example by example (the same examples in the same order).
    """
    tasks = [t for t in a if t in b]
    if not tasks:
        raise FusionBenchError(f"runs {names[0]} and {names[1]} share no task with stored predictions")
    out = {}
    for task in tasks:
        pa, pb = a[task], b[task]
        if list(pa["target"]) != list(pb["target"]):
            raise FusionBenchError(f"runs {names[0]} and {names[1]} were scored on different examples of task '{task}'")
        out[task] = [int(x == t) - int(y == t) for x, y, t in zip(pa["predicted"], pb["predicted"], pa["target"])]
    return out


def paired_bootstrap(differences: Mapping[str, Sequence[int | float]], *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """Paired bootstrap of the average-over-tasks accuracy difference from per-example differences.

    Returns ``{"difference", "lower", "upper", "level", "p_value", "resamples", "seed", "examples"}``
    (``examples``: per task). See the module docstring for the exact definitions.
    """
    if resamples < 1:
        raise FusionBenchError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise FusionBenchError(f"level must lie in (0, 1), got {level}")
    tasks = [t for t in differences if len(differences[t])]
    if not tasks:
        raise FusionBenchError("no examples to compare")
    data = {t: list(differences[t]) for t in tasks}
    estimate = sum(sum(d) / len(d) for d in data.values()) / len(tasks)
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        total = 0.0
        for task in tasks:
            d = data[task]
            total += sum(rng.choices(d, k=len(d))) / len(d)
        stats.append(total / len(tasks))
    stats.sort()
    alpha = 1 - level
    lower = stats[min(resamples - 1, math.floor(resamples * alpha / 2))]
    upper = stats[max(0, math.ceil(resamples * (1 - alpha / 2)) - 1)]
    at_most = sum(s <= 0 for s in stats) / resamples
    at_least = sum(s >= 0 for s in stats) / resamples
    return {"difference": estimate, "lower": lower, "upper": upper, "level": level,
            "p_value": min(1.0, 2 * min(at_most, at_least)), "resamples": resamples, "seed": seed,
            "examples": {t: len(d) for t, d in data.items()}}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient; None where it is undefined (fewer than 2 values, or a constant side)."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} values against {len(y)}")
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span (as scipy ranks them)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        shared = (start + stop) / 2 + 1
        for position in range(start, stop + 1):
            ranks[order[position]] = shared
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: Pearson's correlation of the average ranks; None where it is undefined."""
    return pearson(average_ranks(x), average_ranks(y))
