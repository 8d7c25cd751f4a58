"""The numbers of ``fb compositional report``, from stored runs (pure Python: no torch, no store access).

Every function takes *records*: one per stored run, ``{"method", "hyperparameters", "kind", "sweep",
"expert_seed", "models", "n_models", "permutation", "merged", "cost", "scores"}`` where ``scores`` is
``{split: {task: accuracy}}`` and ``merged`` the held-in pairs whose experts the run fused
(:func:`record`). The baselines are records too: ``pretrained``, ``individual`` (each expert on its
own pair) and ``multitask`` (the multitask model, fused by any one-model method). Group accuracies are means over a group's pairs (:func:`group_accuracy`):
``held-in`` = the merged pairs, ``held-out`` = the pairs no expert saw.

- :func:`method_table`: per method, the setting with the best mean *held-in validation* accuracy
  (Tam et al. tune on held-in data only; ties: the first stored), then its test held-in and
  held-out accuracies, mean ± sample std over expert seeds;
- :func:`correlation`: Pearson's r and Spearman's ρ between held-in and held-out over methods;
- :func:`scaling_table`: per method and number of merged models, the mean over seeded
  permutations and expert seeds;
- :func:`sensitivity_table`: per (method, hyperparameter), the curve over that hyperparameter;
- :func:`cost_table`: per method, mean ± std of each cost field over its runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fusionbench_core.experiments import stats
from fusionbench_core.experiments.tables import mean_std

__all__ = [
    "COST_FIELDS",
    "HELD_IN",
    "HELD_OUT",
    "correlation",
    "cost_table",
    "group_accuracy",
    "mean_std",
    "method_table",
    "pearson",
    "record",
    "scaling_table",
    "sensitivity_table",
    "spearman",
]

HELD_IN, HELD_OUT = "held-in", "held-out"
COST_FIELDS = ("fuse_s", "eval_s", "wall_s", "peak_rss_mb", "forward_passes", "backward_passes", "prepare_passes")


def record(run: Mapping[str, Any], scores: Mapping[str, Mapping[str, Mapping[str, float]]],
           held_in: Sequence[str], order: Any) -> dict[str, Any]:
    """A record from a stored run row and its metrics; ``order(permutation)`` gives the held-in pairs' order."""
    pool = run["modelpool"]
    models, n, perm = pool.get("models", "experts"), int(pool.get("n_models", 0) or 0), int(pool.get("permutation", 0) or 0)
    if run["kind"] != "fused" or models != "experts":
        merged = list(held_in)
    else:
        chosen = order(perm)
        merged = [t for t in held_in if t in set(chosen[:n] if n else chosen)]
    method = {"_pretrained_": "pretrained", "_individual_": "individual"}.get(run["method"], run["method"])
    if models == "multitask":
        method = "multitask"
    return {"id": run["id"], "method": method, "hyperparameters": dict(run["hyperparameters"]),
            "baseline": run["kind"] != "fused" or models == "multitask",
            "kind": run["kind"], "sweep": run.get("sweep"), "expert_seed": int(pool.get("seed", 0) or 0),
            "models": models, "n_models": len(merged) if run["kind"] == "fused" else 0, "permutation": perm,
            "merged": merged, "full": len(merged) == len(held_in), "cost": dict(run.get("cost") or {}),
            "scores": {split: {t: m["accuracy"] for t, m in tasks.items() if "accuracy" in m}
                       for split, tasks in scores.items()}}


def group_accuracy(rec: Mapping[str, Any], split: str, tasks: Iterable[str]) -> float | None:
    """Mean accuracy of a record over the given pairs on ``split`` (None when it scored none of them)."""
    scored = rec["scores"].get(split, {})
    values = [scored[t] for t in tasks if t in scored]
    return sum(values) / len(values) if values else None


def _groups(rec: Mapping[str, Any], held_out: Sequence[str], split: str) -> tuple[float | None, float | None]:
    return group_accuracy(rec, split, rec["merged"]), group_accuracy(rec, split, held_out)


def _hp_key(hps: Mapping[str, Any]) -> str:
    return json.dumps(hps, sort_keys=True, default=str)


def method_table(records: Sequence[Mapping[str, Any]], held_out: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method (full model set): the setting chosen on held-in validation, test held-in / held-out ± std."""
    by_method: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for rec in records:
        if not rec["full"]:
            continue
        by_method.setdefault(rec["method"], {}).setdefault(_hp_key(rec["hyperparameters"]), []).append(rec)
    rows = []
    for method, settings in by_method.items():
        best, best_val = None, None
        for key, recs in settings.items():
            vals = [v for v in (group_accuracy(r, "validation", r["merged"]) for r in recs) if v is not None]
            score = sum(vals) / len(vals) if vals else None
            if best is None or (score is not None and (best_val is None or score > best_val)):
                best, best_val = key, score
        recs = settings[best]
        held_in = [v for v in (_groups(r, held_out, "test")[0] for r in recs) if v is not None]
        out = [v for v in (_groups(r, held_out, "test")[1] for r in recs) if v is not None]
        rows.append({"method": method, "hyperparameters": json.loads(best), "seeds": len(recs),
                     "kind": recs[0]["kind"], "baseline": recs[0]["baseline"], "validation_held_in": best_val,
                     HELD_IN: mean_std(held_in) if held_in else None, HELD_OUT: mean_std(out) if out else None})
    return rows


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient (None for fewer than 3 points or no spread)."""
    return stats.pearson(xs, ys) if len(xs) >= 3 else None


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's r of the ranks, ties averaged; None for fewer than 3 points)."""
    return stats.spearman(xs, ys) if len(xs) >= 3 else None


def correlation(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """r and ρ between held-in and held-out test means over the fused methods' rows."""
    points = [(r[HELD_IN][0], r[HELD_OUT][0]) for r in rows
              if not r["baseline"] and r.get(HELD_IN) and r.get(HELD_OUT)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {"methods": len(points), "pearson": pearson(xs, ys), "spearman": spearman(xs, ys)}


def scaling_table(records: Sequence[Mapping[str, Any]], held_out: Sequence[str],
                  settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{method: {k: {"held-in": (mean, std), "held-out": (mean, std), "runs": n}}}`` for the given settings.

    ``settings`` fixes the hyperparameters per method (the scaling sweep's); runs of every number
    of merged models count, the full set included.
    """
    cells: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for rec in records:
        if rec["baseline"] or rec["method"] not in settings:
            continue
        wanted = dict(settings[rec["method"]])
        if any(rec["hyperparameters"].get(k) != v for k, v in wanted.items()):
            continue
        cells.setdefault(rec["method"], {}).setdefault(rec["n_models"], []).append(rec)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for method, by_k in cells.items():
        for k in sorted(by_k):
            ins = [v for v in (_groups(r, held_out, "test")[0] for r in by_k[k]) if v is not None]
            outs = [v for v in (_groups(r, held_out, "test")[1] for r in by_k[k]) if v is not None]
            out.setdefault(method, {})[k] = {HELD_IN: mean_std(ins), HELD_OUT: mean_std(outs), "runs": len(by_k[k])}
    return out


def sensitivity_table(records: Sequence[Mapping[str, Any]], held_out: Sequence[str],
                      axes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per method of ``axes`` (method → hyperparameter): ``{"axis", "points": [(value, in, out, val_in)]}``.

    Only runs of the full model set count (the sweep varies one hyperparameter per method).
    """
    out = {}
    for method, axis in axes.items():
        recs = [r for r in records if r["method"] == method and not r["baseline"] and r["full"]
                and axis in r["hyperparameters"]]
        if not recs:
            continue
        by_value: dict[Any, list[Mapping[str, Any]]] = {}
        for r in recs:
            by_value.setdefault(r["hyperparameters"][axis], []).append(r)
        points = []
        for value in sorted(by_value):
            group = by_value[value]
            ins = [x for x in (_groups(r, held_out, "test")[0] for r in group) if x is not None]
            outs = [x for x in (_groups(r, held_out, "test")[1] for r in group) if x is not None]
            vals = [x for x in (group_accuracy(r, "validation", r["merged"]) for r in group) if x is not None]
            points.append((value, mean_std(ins)[0] if ins else None, mean_std(outs)[0] if outs else None,
                           mean_std(vals)[0] if vals else None))
        if len(points) >= 2:
            out[method] = {"axis": axis, "points": points}
    return out


def cost_table(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method (fused runs of the full model set): mean ± std of each cost field present, and the run count."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if not rec["baseline"] and rec["full"]:
            by_method.setdefault(rec["method"], []).append(rec)
    rows = []
    for method, recs in by_method.items():
        row: dict[str, Any] = {"method": method, "runs": len(recs)}
        for field in COST_FIELDS:
            values = [float(r["cost"][field]) for r in recs if isinstance(r["cost"].get(field), (int, float))]
            row[field] = mean_std(values) if values else None
        rows.append(row)
    return rows
