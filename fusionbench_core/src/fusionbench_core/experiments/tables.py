"""Validation selection and the leaderboard: method × task tables from the result store.

For each suite and method, the hyperparameter setting with the best mean (over seeds) average
accuracy on the **validation** split is selected (``select_on="validation"``, the default), and its
**test** metrics are reported: per task and on average, mean ± sample standard deviation over the
seeds, with the normalised accuracy (merged ÷ individual fine-tuned model, per task, then averaged)
next to it, the mean wall time of one run, and the selected hyperparameters. ``select_on="test"``
selects on the test split itself (an oracle, labelled so). Ties go to the setting stored first.

Reference rows, when the sweep recorded them: ``_pretrained_`` (the pretrained model) and
``_individual_`` (each fine-tuned model on its own task). A suite whose pool follows the seed (its
experts are trained per seed) has references per seed: the rows then average them over the seeds,
and each run is normalised by the individual models of its own seed.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FusionBenchError

__all__ = ["Leaderboard", "build_leaderboards", "render", "FORMATS"]

FORMATS = ("markdown", "csv", "latex", "html")


def suite_label(run: dict[str, Any]) -> str:
    """``tiny`` or ``tiny[n_models=2]`` or ``a→b``: the model pool and task pool of a stored run (split excluded)."""
    def text(pool: dict[str, Any]) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(pool.items()) if k not in ("name", "split"))
        return pool["name"] + (f"[{opts}]" if opts else "")

    mp, tp = text(run["modelpool"]), text(run["taskpool"])
    return mp if mp == tp else f"{mp}→{tp}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class Row:
    """One method's line of a leaderboard."""

    method: str
    hyperparameters: dict[str, Any]
    tasks: dict[str, tuple[float, float]]
    average: tuple[float, float]
    normalised: tuple[float, float] | None
    wall_s: float | None
    seeds: list[int]
    run_ids: list[int]
    selection_score: float | None = None
    """The mean (over seeds) average accuracy on the selection split."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {"method": self.method, "hyperparameters": self.hyperparameters,
                "tasks": {t: {"mean": m, "std": s} for t, (m, s) in self.tasks.items()},
                "average": {"mean": self.average[0], "std": self.average[1]},
                "normalised": (None if self.normalised is None
                               else {"mean": self.normalised[0], "std": self.normalised[1]}),
                "wall_s": self.wall_s, "seeds": self.seeds, "runs": self.run_ids,
                "selection_score": self.selection_score}


@dataclass
class Leaderboard:
    """The leaderboard of one suite."""

    suite: str
    select_on: str
    metric: str
    tasks: list[str]
    rows: list[Row] = field(default_factory=list)
    candidates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per method, every hyperparameter setting with its validation and test means (for plots)."""
    unselectable: list[str] = field(default_factory=list)
    """Methods left out: none of their runs scored the selection split (``fb run`` alone, say)."""

    @property
    def caption(self) -> str:
        """What the table shows and how the hyperparameters were chosen."""
        chosen = ("hyperparameters selected on the validation split" if self.select_on == "validation"
                  else "hyperparameters selected on the test split (oracle, not a fair protocol)")
        also = "" if self.select_on == "test" else " and test scores of one run"
        left_out = (f" Not shown, no {self.select_on} scores{also} (run them with fb sweep): "
                    f"{', '.join(self.unselectable)}." if self.unselectable else "")
        return (f"{self.suite}: test {self.metric} (%), mean ± std over the seeds (column seeds; one seed: "
                f"its value alone); normalised = merged ÷ individual; "
                f"{chosen}; cost = mean wall time of one run (s).{left_out}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready leaderboard."""
        return {"suite": self.suite, "select_on": self.select_on, "metric": self.metric, "tasks": self.tasks,
                "caption": self.caption, "rows": [r.to_dict() for r in self.rows]}


def build_leaderboards(store: Any, *, select_on: str = "validation", metric: str = "accuracy",
                       suite: str | None = None, sweep: str | None = None,
                       methods: Sequence[str] | None = None) -> list[Leaderboard]:
    """One :class:`Leaderboard` per suite found in ``store`` (filtered by ``suite``, ``sweep``, ``methods``)."""
    if select_on not in ("validation", "test"):
        raise FusionBenchError(f"--select-on must be validation or test, got '{select_on}'")
    runs = store.runs(sweep=sweep, kind=None)
    if suite is not None:
        runs = [r for r in runs if suite in (r["modelpool"]["name"], r["taskpool"]["name"], suite_label(r))]
    if methods:
        check_methods(methods, [r for r in runs if r["kind"] == "fused"], store.path, suite=suite, sweep=sweep)
        runs = [r for r in runs if r["method"] in methods or r["kind"] != "fused"]
    if not runs:
        raise FusionBenchError(f"result store '{store.path}' holds no runs" + (f" of suite '{suite}'" if suite else "")
                               + (f" of sweep '{sweep}'" if sweep else ""))
    metrics = store.metrics([r["id"] for r in runs])
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        run["metrics"] = metrics[run["id"]]
        by_suite.setdefault(suite_label(run), []).append(run)
    boards = []
    for label, suite_runs in by_suite.items():
        boards.append(_leaderboard(label, suite_runs, select_on, metric))
    return boards


def check_methods(methods: Sequence[str], runs: list[dict[str, Any]], path: Any, *, suite: str | None = None,
                  sweep: str | None = None) -> None:
    """Refuse a method asked for (``fb table -m``) that has no run among ``runs``, with a did-you-mean."""
    import difflib

    stored = sorted({r["method"] for r in runs})
    for method in methods:
        if method in stored:
            continue
        where = f"result store '{path}'" + (f" (suite '{suite}')" if suite else "") + (
            f" (sweep '{sweep}')" if sweep else "")
        close = difflib.get_close_matches(method, stored, n=3, cutoff=0.5)
        hint = (f" Did you mean: {', '.join(close)}?" if close
                else f" Stored: {', '.join(stored)}." if stored else "")
        raise FusionBenchError(f"no runs of method '{method}' in {where}.{hint}")


def _split_metrics(run: dict[str, Any], split: str) -> dict[str, dict[str, float]] | None:
    return run["metrics"].get(split)


def _average(tasks: dict[str, dict[str, float]], metric: str) -> float | None:
    values = [m[metric] for m in tasks.values() if metric in m]
    return sum(values) / len(values) if values else None


def _leaderboard(label: str, runs: list[dict[str, Any]], select_on: str, metric: str) -> Leaderboard:
    fused = [r for r in runs if r["kind"] == "fused"]
    refs = {kind: [r for r in runs if r["kind"] == kind] for kind in ("pretrained", "individual")}
    tasks: list[str] = []
    for run in fused + refs["pretrained"]:
        for task in (_split_metrics(run, "test") or {}):
            if task not in tasks:
                tasks.append(task)
    latest = {kind: {run["seed"]: run for run in kind_runs} for kind, kind_runs in refs.items()}  # seed → latest
    individual: dict[int | None, dict[str, float]] = {}
    for seed, run in latest["individual"].items():
        reference = _split_metrics(run, "test") or {}
        individual[seed] = {t: m[metric] for t, m in reference.items() if metric in m}
    if refs["individual"]:
        individual[None] = individual[refs["individual"][-1]["seed"]]  # for seeds without their own reference
    board = Leaderboard(label, select_on, metric, tasks)

    # method → setting (JSON) → seed → latest run
    grouped: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    # A run takes part only when it scored both the selection split and the test split: an `fb run`
    # (test only) cannot be selected on validation, and a run of a pool set to score validation
    # (`-s taskpool.split=validation`) has no test score to show. A method with no such run is left
    # out and named in the caption.
    usable = [r for r in fused if _split_metrics(r, select_on) and _split_metrics(r, "test")]
    board.unselectable = sorted({r["method"] for r in fused} - {r["method"] for r in usable})
    for run in usable:
        setting = json.dumps(run["hyperparameters"], sort_keys=True)
        grouped.setdefault(run["method"], {}).setdefault(setting, {})[run["seed"]] = run
    for method, settings in grouped.items():
        candidates = []
        for setting, by_seed in settings.items():
            seeds = sorted(by_seed)
            chosen_runs = [by_seed[s] for s in seeds]
            scores = [_average(_split_metrics(r, select_on) or {}, metric) for r in chosen_runs]
            tests = [_average(_split_metrics(r, "test") or {}, metric) for r in chosen_runs]
            vals = [_average(_split_metrics(r, "validation") or {}, metric) for r in chosen_runs]
            candidates.append({
                "hyperparameters": json.loads(setting), "seeds": seeds, "runs": chosen_runs,
                "score": None if any(s is None for s in scores) else sum(scores) / len(scores),
                "test": None if any(t is None for t in tests) else sum(tests) / len(tests),
                "validation": None if any(v is None for v in vals) else sum(vals) / len(vals),
                "first_id": min(r["id"] for r in chosen_runs),
            })
        board.candidates[method] = [{k: v for k, v in c.items() if k != "runs"} for c in candidates]
        scored = [c for c in candidates if c["score"] is not None]
        if not scored:
            raise FusionBenchError(
                f"method '{method}' on suite '{label}' has no {select_on} scores in the store; "
                f"run the sweep with --select-on {select_on}, or pass --select-on test")
        best = sorted(scored, key=lambda c: (-c["score"], c["first_id"]))[0]
        board.rows.append(_row(method, best["hyperparameters"], best["runs"], tasks, metric, individual,
                               best["score"]))
    board.rows.sort(key=lambda r: (-r.average[0], r.method))
    for kind in ("individual", "pretrained"):
        if refs[kind]:
            board.rows.append(_row(f"_{kind}_", {}, [latest[kind][s] for s in sorted(latest[kind])], tasks, metric,
                                   individual, None))
    return board


def _row(method: str, hps: dict[str, Any], runs: list[dict[str, Any]], tasks: list[str], metric: str,
         individual: dict[int | None, dict[str, float]], score: float | None) -> Row:
    """One row: ``runs`` (one per seed) averaged; ``individual`` holds the references by seed (``None``: fallback)."""
    per_task: dict[str, tuple[float, float]] = {}
    for task in tasks:
        values = [(_split_metrics(r, "test") or {}).get(task, {}).get(metric) for r in runs]
        values = [v for v in values if v is not None]
        if values:
            per_task[task] = mean_std(values)
    averages = [a for a in (_average(_split_metrics(r, "test") or {}, metric) for r in runs) if a is not None]
    normalised = None
    if individual:
        norms = []
        for run in runs:
            test = _split_metrics(run, "test") or {}
            own = individual.get(run["seed"], individual[None])
            ratios = [test[t][metric] / own[t] for t in test if t in own and own[t] and metric in test[t]]
            if ratios:
                norms.append(sum(ratios) / len(ratios))
        normalised = mean_std(norms) if norms else None
    walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    return Row(method, hps, per_task, mean_std(averages) if averages else (math.nan, 0.0), normalised,
               sum(walls) / len(walls) if walls else None, sorted({r["seed"] for r in runs}),
               [r["id"] for r in runs], score)


# -- rendering ---------------------------------------------------------------------------------


def _pct(value: tuple[float, float] | None, pm: str = " ± ", seeds: int = 2) -> str:
    """``mean ± std`` in %, the mean alone for one seed (a spread of one value is no information)."""
    if value is None or math.isnan(value[0]):
        return "–"
    if seeds < 2:
        return f"{100 * value[0]:.1f}"
    return f"{100 * value[0]:.1f}{pm}{100 * value[1]:.1f}"


def _hp(hps: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in hps.items()) or "–"


def _cells(board: Leaderboard, row: Row, pm: str = " ± ") -> list[str]:
    n = len(row.seeds)
    return ([row.method] + [_pct(row.tasks.get(t), pm, n) for t in board.tasks]
            + [_pct(row.average, pm, n), _pct(row.normalised, pm, n), str(n),
               "–" if row.wall_s is None else f"{row.wall_s:.2f}", _hp(row.hyperparameters)])


def header(board: Leaderboard) -> list[str]:
    """Column titles."""
    return ["method", *board.tasks, "average", "normalised", "seeds", "cost (s)", "hyperparameters"]


def render(boards: Sequence[Leaderboard], fmt: str) -> str:
    """The leaderboards as ``markdown``, ``csv``, ``latex`` or ``html`` text."""
    if fmt not in FORMATS:
        raise FusionBenchError(f"table format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    return {"markdown": _markdown, "csv": _csv, "latex": _latex, "html": _html}[fmt](boards)


def _markdown(boards: Sequence[Leaderboard]) -> str:
    parts = []
    for board in boards:
        cols = header(board)
        lines = [f"**{board.caption}**", "", "| " + " | ".join(cols) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(cols) - 2) + ["---"]) + "|"]
        for row in board.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(board, row)) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _csv(boards: Sequence[Leaderboard]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    tasks = []
    for board in boards:
        tasks += [t for t in board.tasks if t not in tasks]
    cols = ["suite", "method", "select_on"]
    for name in [*tasks, "average", "normalised"]:
        cols += [f"{name}_mean", f"{name}_std"]
    writer.writerow(cols + ["wall_s", "seeds", "hyperparameters"])
    for board in boards:
        for row in board.rows:
            values: list[Any] = [board.suite, row.method, board.select_on]
            for pair in [*(row.tasks.get(t) for t in tasks), row.average, row.normalised]:
                values += ["", ""] if pair is None else [f"{pair[0]:.6f}", f"{pair[1]:.6f}"]
            values += ["" if row.wall_s is None else f"{row.wall_s:.3f}", len(row.seeds),
                       json.dumps(row.hyperparameters, sort_keys=True)]
            writer.writerow(values)
    return out.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("~", r"\textasciitilde{}"), ("^", r"\^{}"), ("→", r"$\to$")):
        text = text.replace(a, b)
    return text


def _latex(boards: Sequence[Leaderboard]) -> str:
    parts = []
    for board in boards:
        cols = header(board)
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 r"\begin{tabular}{l" + "r" * (len(cols) - 2) + "l}", r"\toprule",
                 " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
        for row in board.rows:
            lines.append(" & ".join(_tex(c) if i in (0, len(cols) - 1) else c
                                    for i, c in enumerate(_cells(board, row, r"$\pm$"))) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(board.caption).replace("±", r"$\pm$")
                  .replace("÷", r"$\div$") + "}", r"\end{table}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _html(boards: Sequence[Leaderboard]) -> str:
    parts = []
    for board in boards:
        cols = header(board)
        lines = ['<table class="leaderboard">', f"<caption>{html.escape(board.caption)}</caption>",
                 "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr></thead>", "<tbody>"]
        for row in board.rows:
            lines.append(f'<tr data-method="{html.escape(row.method)}">'
                         + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(board, row)) + "</tr>")
        lines += ["</tbody>", "</table>"]
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"
