"""Agreement of a leaderboard with a published one (``fb agree``): rank correlations and gap shares.

A proxy suite is useful when it ranks methods as the real benchmark does. Given our averages
``{method: score}`` and a published leaderboard (``published.json``, shipped with this package,
every figure with its source and status), over the methods both have:

- **Spearman's ρ** (:func:`~fusionbench_core.experiments.stats.spearman`: Pearson's correlation of
  average ranks, so ties are handled) and **Kendall's τ-b** (:func:`kendall_tau_b`), each with a
  percentile bootstrap interval (:func:`bootstrap_correlations`): the *methods* are resampled with
  replacement (``random.Random(seed)``), both statistics are computed on each resample, and the
  interval is ``sorted[floor(R·α/2)]`` to ``sorted[ceil(R·(1−α/2)) − 1]`` over the ``R`` resamples
  where the statistic is defined (the definition of :mod:`.stats`). A resample with fewer than 3
  distinct methods is skipped; one where a side is constant leaves that statistic undefined and is
  skipped for it. Both counts are reported.
- **The share of the gap recovered**, per method and side: ``(method − pretrained) / (individual −
  pretrained)`` (:func:`gap_share`); 0 is the pretrained model, 1 the fine-tuned experts.

:func:`compare` also gives the statistics over a held-out subset and over the rest (the calibration
methods) from the same call, so a design chosen on some methods is checked on the others.
Everything here is the standard library; nothing imports torch.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from ..errors import FusionBenchError, UnknownComponentError
from .stats import average_ranks, spearman

__all__ = ["PUBLISHED_FILE", "agreement", "bootstrap_correlations", "compare", "gap_share", "kendall_tau_b",
           "leaderboard_summaries", "published_leaderboard", "published_leaderboards", "published_scores",
           "render_markdown", "scores_from_json", "scores_from_store"]

PUBLISHED_FILE = "published.json"
"""The published leaderboards, next to this module (package data)."""

STATUSES = ("verified", "secondary", "unverified")
"""How far each published figure was checked; ``published.json`` says what each means."""

MIN_METHODS = 3
"""Fewer shared methods than this leave no rank correlation worth reporting."""


# -- the published leaderboards ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _published() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def published_leaderboards() -> dict[str, dict[str, Any]]:
    """Every shipped leaderboard by id (``published.json``'s ``leaderboards``; do not mutate)."""
    return {board["id"]: board for board in _published()["leaderboards"]}


def published_leaderboard(board_id: str) -> dict[str, Any]:
    """One shipped leaderboard; an unknown id raises an error with the closest ids."""
    boards = published_leaderboards()
    if board_id not in boards:
        raise UnknownComponentError("leaderboard", board_id, boards, hint="fb agree --list shows them.",
                                    label="published leaderboard")
    return boards[board_id]


def leaderboard_summaries() -> list[dict[str, Any]]:
    """One row per shipped leaderboard: id, model, tasks, methods (published / matched here), source."""
    rows = []
    for board in published_leaderboards().values():
        methods = [r for r in board["rows"] if r["role"] == "method"]
        rows.append({"id": board["id"], "title": board["title"], "model": board["model"],
                     "tasks": list(board["tasks"]), "methods": len(methods),
                     "matched": sum(r["method"] is not None for r in methods), "source": board["source"]})
    return rows


def published_scores(board: Mapping[str, Any], *, statuses: Iterable[str] = STATUSES) -> dict[str, Any]:
    """A published leaderboard as ``{"scores": {registry method: average}, "pretrained", "individual", "rows"}``.

    Only rows mapped to one of our methods are scored; ``statuses`` keeps only figures of those
    statuses (the references too: a reference of another status is dropped, so its gap shares are None).
    ``rows`` maps each scored method to its published row (name, source, status).
    """
    keep = set(statuses)
    unknown = keep - set(STATUSES)
    if unknown:
        raise FusionBenchError(f"unknown status '{min(unknown)}'; statuses are {', '.join(STATUSES)}")
    out: dict[str, Any] = {"scores": {}, "pretrained": None, "individual": None, "rows": {}}
    for row in board["rows"]:
        if row["status"] not in keep:
            continue
        if row["role"] in ("pretrained", "individual"):
            out[row["role"]] = row["average"]
        elif row["role"] == "method" and row["method"] is not None:
            out["scores"][row["method"]] = row["average"]
            out["rows"][row["method"]] = row
    return out


# -- the statistics ----------------------------------------------------------------------------


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b, ``(C − D) / sqrt((P − Tx)(P − Ty))``; None where it is undefined.

    ``C``/``D`` count concordant/discordant pairs, ``P = n(n − 1)/2``, and ``Tx``/``Ty`` the pairs
    tied in ``x``/``y`` (a pair tied in both counts in each). Undefined with fewer than 2 values or a
    constant side.
    """
    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} values against {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 or dy == 0:
                tied_x += dx == 0
                tied_y += dy == 0
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = (pairs - tied_x) * (pairs - tied_y)
    if denominator == 0:
        return None
    return (concordant - discordant) / math.sqrt(denominator)


def _interval(values: list[float], level: float) -> tuple[float | None, float | None]:
    """Percentile interval of :mod:`.stats`, over the resamples where the statistic is defined."""
    if not values:
        return None, None
    values = sorted(values)
    count, alpha = len(values), round(1 - level, 12)  # 1 − 0.9 is 0.0999…, which would shift an exact index
    return (values[min(count - 1, math.floor(count * alpha / 2))],
            values[max(0, math.ceil(count * (1 - alpha / 2)) - 1)])


def bootstrap_correlations(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                           level: float = 0.95) -> dict[str, Any]:
    """Spearman's ρ and Kendall's τ-b of paired values, each with a bootstrap interval over the pairs.

    Returns ``{"spearman": {"estimate", "lower", "upper", "resamples_used"}, "kendall": {...},
    "resamples", "skipped_few_distinct", "seed", "level"}``. The pairs (methods) are drawn with
    replacement, the same draw for both statistics; see the module docstring for what is skipped.
    """
    if resamples < 1:
        raise FusionBenchError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise FusionBenchError(f"level must lie in (0, 1), got {level}")
    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} values against {len(y)}")
    statistics = {"spearman": spearman, "kendall": kendall_tau_b}
    draws: dict[str, list[float]] = {name: [] for name in statistics}
    rng = random.Random(seed)
    few = 0
    indices = range(n)
    for _ in range(resamples):
        drawn = rng.choices(indices, k=n)
        if len(set(drawn)) < MIN_METHODS:
            few += 1
            continue
        xs, ys = [x[i] for i in drawn], [y[i] for i in drawn]
        for name, statistic in statistics.items():
            value = statistic(xs, ys)
            if value is not None:
                draws[name].append(value)
    out: dict[str, Any] = {}
    for name, statistic in statistics.items():
        lower, upper = _interval(draws[name], level)
        out[name] = {"estimate": statistic(list(x), list(y)), "lower": lower, "upper": upper,
                     "resamples_used": len(draws[name])}
    out.update({"resamples": resamples, "skipped_few_distinct": few, "seed": seed, "level": level})
    return out


def gap_share(score: float | None, pretrained: float | None, individual: float | None) -> float | None:
    """``(score − pretrained) / (individual − pretrained)``; None where a value is missing or the gap is 0."""
    if score is None or pretrained is None or individual is None or individual == pretrained:
        return None
    return (score - pretrained) / (individual - pretrained)


def _ranks(scores: Sequence[float]) -> list[float]:
    """1 = highest score; ties share the mean rank."""
    return average_ranks([-s for s in scores])


def agreement(ours: Mapping[str, float], theirs: Mapping[str, float], *, methods: Iterable[str] | None = None,
              resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Rank agreement of two ``{method: score}`` maps over the methods both have (within ``methods`` if given).

    Returns ``{"methods": [...], "n", "spearman", "kendall", "resamples", "skipped_few_distinct",
    "seed", "level"}``; with fewer than 3 shared methods the statistics are None and ``reason`` says why.
    """
    wanted = None if methods is None else set(methods)
    shared = [m for m in ours if m in theirs and (wanted is None or m in wanted)]
    out: dict[str, Any] = {"methods": shared, "n": len(shared)}
    if len(shared) < MIN_METHODS:
        empty = {"estimate": None, "lower": None, "upper": None, "resamples_used": 0}
        out.update({"spearman": empty, "kendall": dict(empty), "resamples": resamples, "skipped_few_distinct": 0,
                    "seed": seed, "level": level,
                    "reason": f"{len(shared)} shared methods; a rank correlation needs at least {MIN_METHODS}"})
        return out
    out.update(bootstrap_correlations([ours[m] for m in shared], [theirs[m] for m in shared],
                                      resamples=resamples, seed=seed, level=level))
    return out


# -- comparing with a shipped leaderboard ------------------------------------------------------


def compare(ours: Mapping[str, float], published_id: str, *, pretrained: float | None = None,
            individual: float | None = None, held_out: Iterable[str] | None = None,
            statuses: Iterable[str] = STATUSES, resamples: int = 2000, seed: int = 0,
            level: float = 0.95) -> dict[str, Any]:
    """Our averages ``{method: score}`` beside a shipped leaderboard, as a plain (JSON-ready) dict.

    ``pretrained``/``individual`` are our references, in the same unit as ``ours`` (any unit: gap
    shares and ranks do not depend on it). ``held_out`` names the held-out methods: the result then
    has agreement over them and over the other shared methods (``calibration``) besides ``all``.
    Raises when fewer than 3 methods are shared, or a held-out name is neither ours nor published.

    Keys: ``against``, ``title``, ``model``, ``source``, ``protocol``, ``statuses``, ``methods`` (one
    row per shared method, best published first: method, published_name, ours, published, gap
    shares, ranks within the shared methods, held_out, source, status), ``references``,
    ``agreement`` (``all`` and, with ``held_out``, ``calibration`` and ``held_out``), ``unmatched``.
    """
    board = published_leaderboard(published_id)
    statuses = tuple(statuses)
    theirs = published_scores(board, statuses=statuses)
    scores = theirs["scores"]
    for method, value in ours.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise FusionBenchError(f"score of method '{method}' must be a finite number, got {value!r}")
    shared = [m for m in ours if m in scores]
    if len(shared) < MIN_METHODS:
        raise FusionBenchError(
            f"only {len(shared)} method(s) shared with published leaderboard '{published_id}' "
            f"({', '.join(shared) or 'none'}); agreement needs at least {MIN_METHODS}")
    held = None
    if held_out is not None:
        held = list(dict.fromkeys(held_out))
        known = set(ours) | {r["method"] for r in board["rows"] if r["method"]}
        for name in held:
            if name not in known:
                raise UnknownComponentError("method", name, known, label="held-out method")
    ours_ranks = dict(zip(shared, _ranks([ours[m] for m in shared])))
    their_ranks = dict(zip(shared, _ranks([scores[m] for m in shared])))
    rows = []
    for method in sorted(shared, key=lambda m: (-scores[m], m)):
        published_row = theirs["rows"][method]
        rows.append({"method": method, "published_name": published_row["name"],
                     "ours": ours[method], "published": scores[method],
                     "gap_share_ours": gap_share(ours[method], pretrained, individual),
                     "gap_share_published": gap_share(scores[method], theirs["pretrained"], theirs["individual"]),
                     "rank_ours": ours_ranks[method], "rank_published": their_ranks[method],
                     "held_out": bool(held) and method in held,
                     "source": published_row["source"], "status": published_row["status"]})
    kwargs = {"resamples": resamples, "seed": seed, "level": level}
    groups = {"all": agreement(ours, scores, **kwargs)}
    if held is not None:
        groups["calibration"] = agreement(ours, scores, methods=[m for m in shared if m not in held], **kwargs)
        groups["held_out"] = agreement(ours, scores, methods=held, **kwargs)
    return {
        "against": board["id"], "title": board["title"], "model": board["model"], "source": board["source"],
        "protocol": list(board.get("protocol", [])), "statuses": list(statuses),
        "methods": rows,
        "references": {"ours": {"pretrained": pretrained, "individual": individual},
                       "published": {"pretrained": theirs["pretrained"], "individual": theirs["individual"]}},
        "agreement": groups,
        "held_out": held,
        "unmatched": {"ours": sorted(m for m in ours if m not in scores),
                      "published": [r["name"] for r in board["rows"] if r["role"] == "method"
                                    and r["status"] in statuses and r["method"] not in shared]},
    }


# -- our side: the result store, or a JSON file ------------------------------------------------


def scores_from_store(store: Any, *, suite: str, select_on: str = "validation", sweep: str | None = None,
                      metric: str = "accuracy") -> dict[str, Any]:
    """A suite's leaderboard as ``fb table`` builds it: ``{"suite", "scores", "pretrained", "individual", ...}``.

    ``left_out`` names the methods without scores on the selection split. Scores are test averages in % (mean over seeds). ``select_on="none"`` selects nothing: each
    method must have one hyperparameter setting in the store (its test scores are then taken as they
    are); a method with several is an error.
    """
    from .tables import build_leaderboards

    if select_on not in ("validation", "test", "none"):
        raise FusionBenchError(f"--select-on must be validation, test or none, got '{select_on}'")
    boards = build_leaderboards(store, select_on="test" if select_on == "none" else select_on, metric=metric,
                                suite=suite, sweep=sweep)
    if len(boards) > 1:
        raise FusionBenchError(f"suite '{suite}' matches {len(boards)} leaderboards in the store "
                               f"({', '.join(b.suite for b in boards)}); pass one of them to --suite")
    (board,) = boards
    if select_on == "none":
        for method, candidates in board.candidates.items():
            if len(candidates) > 1:
                raise FusionBenchError(
                    f"method '{method}' has {len(candidates)} hyperparameter settings on suite '{board.suite}'; "
                    f"--select-on none needs one per method (use --select-on validation)")
    out: dict[str, Any] = {"suite": board.suite, "select_on": select_on, "scores": {}, "pretrained": None,
                           "individual": None, "left_out": list(board.unselectable)}
    for row in board.rows:
        if math.isnan(row.average[0]):
            continue
        value = 100 * row.average[0]
        if row.method in ("_pretrained_", "_individual_"):
            out[row.method.strip("_")] = value
        else:
            out["scores"][row.method] = value
    if not out["scores"]:
        split = "test" if select_on == "none" else select_on
        left = f" (left out: {', '.join(board.unselectable)})" if board.unselectable else ""
        raise FusionBenchError(f"suite '{board.suite}' has no fused run with {split} scores in the store{left}")
    return out


def scores_from_json(data: Any, *, name: str = "JSON input") -> dict[str, Any]:
    """``{method: average, "_pretrained_": x, "_individual_": y}`` as ``{"scores", "pretrained", "individual"}``.

    The two references are optional (without them gap shares are None); every value must be a number.
    """
    if not isinstance(data, dict):
        raise FusionBenchError(f"{name} must be a JSON object {{method: average}}, got {type(data).__name__}")
    out: dict[str, Any] = {"scores": {}, "pretrained": None, "individual": None}
    for key, value in data.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise FusionBenchError(f"{name}: key '{key}' must be a finite number, got {json.dumps(value)}")
        if key in ("_pretrained_", "_individual_"):
            out[key.strip("_")] = float(value)
        elif key.startswith("_") and key.endswith("_"):
            raise FusionBenchError(f"{name}: unknown reference key '{key}' (use _pretrained_ or _individual_)")
        else:
            out["scores"][key] = float(value)
    return out


# -- rendering ---------------------------------------------------------------------------------


def number(value: float | None, digits: int = 2) -> str:
    """A figure to ``digits`` places, ``–`` when missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def rank(value: float) -> str:
    """A rank: whole, or with ``.5`` when tied."""
    return f"{value:g}"


def interval(stat: Mapping[str, Any]) -> str:
    """``0.81 [0.52, 0.95]``, or ``–`` when undefined."""
    if stat["estimate"] is None:
        return "–"
    bounds = ("[–]" if stat["lower"] is None
              else f"[{stat['lower']:.2f}, {stat['upper']:.2f}]")
    return f"{stat['estimate']:.2f} {bounds}"


GROUP_TITLES = {"all": "all shared", "calibration": "calibration", "held_out": "held out"}


def caption(result: Mapping[str, Any]) -> str:
    """How the intervals were obtained."""
    first = result["agreement"]["all"]
    return (f"{round(100 * first['level'])} % percentile bootstrap intervals over methods: {first['resamples']} "
            f"resamples (seed {first['seed']}), resamples with fewer than {MIN_METHODS} distinct methods or a "
            f"constant side skipped. Gap share = (method − pretrained) / (individual − pretrained); rank 1 = best.")


def render_markdown(result: Mapping[str, Any], ours_label: str = "ours") -> str:
    """The comparison as Markdown: the per-method table, the references, the correlations."""
    lines = [f"**{ours_label} against {result['against']}** ({result['title']}; {result['source']})", "",
             ("| method | published as | ours | published | gap share ours | gap share published "
              "| rank ours | rank published |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["methods"]:
        name = row["method"] + (" (held out)" if row["held_out"] else "")
        lines.append(f"| {name} | {row['published_name']} | {number(row['ours'])} | {number(row['published'])} | "
                     f"{number(row['gap_share_ours'])} | {number(row['gap_share_published'])} | "
                     f"{rank(row['rank_ours'])} | {rank(row['rank_published'])} |")
    refs = result["references"]
    for kind in ("pretrained", "individual"):
        lines.append(f"| _{kind}_ | | {number(refs['ours'][kind])} | {number(refs['published'][kind])} "
                     f"| | | | |")
    level = round(100 * result["agreement"]["all"]["level"])
    lines += ["", f"| methods | n | Spearman ρ [{level} % CI] | Kendall τ-b [{level} % CI] |", "|---|---:|---|---|"]
    for group, stats in result["agreement"].items():
        lines.append(f"| {GROUP_TITLES[group]} | {stats['n']} | {interval(stats['spearman'])} | "
                     f"{interval(stats['kendall'])} |")
    lines += ["", caption(result)]
    if result["unmatched"]["ours"]:
        lines.append(f"Not published: {', '.join(result['unmatched']['ours'])}.")
    return "\n".join(lines) + "\n"
