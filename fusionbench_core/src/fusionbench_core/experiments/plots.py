"""``fb plot``: PNG figures of the leaderboards with matplotlib (``pip install fusionbench-core[plots]``).

- λ curves (``lambda-<suite>.png``): for every method whose stored settings vary in exactly one
  numeric hyperparameter, the mean (over seeds) average accuracy against that hyperparameter, on
  the validation split (dashed) and the test split (solid), the selected setting marked;
- a per-task heatmap (``heatmap-<suite>.png``): the leaderboard's test accuracy, method × task.

The held-in against held-out scatter of the issue needs a suite with both kinds of tasks; no
installed suite reports that distinction yet, so it is not drawn.

PNGs carry no timestamp or version metadata: the same store gives the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from ..errors import FusionBenchError
from .tables import Leaderboard

__all__ = ["figure_captions", "figures", "heatmap_png", "lambda_png"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise FusionBenchError("fb plot needs matplotlib: pip install 'fusionbench-core[plots]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "fusionbench", "font.size": 9})
    return plt


def slug(text: str) -> str:
    """A file-name-safe form of a suite label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("→", "-to-")).strip("_") or "suite"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def curve_axes(board: Leaderboard) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Per method, the one numeric hyperparameter its settings vary in, with the settings sorted by it."""
    out = {}
    for method, candidates in board.candidates.items():
        if len(candidates) < 2:
            continue
        keys = set().union(*(c["hyperparameters"] for c in candidates))
        varying = [k for k in sorted(keys) if len({repr(c["hyperparameters"].get(k)) for c in candidates}) > 1]
        if len(varying) != 1:
            continue
        axis = varying[0]
        if not all(isinstance(c["hyperparameters"].get(axis), (int, float)) and
                   not isinstance(c["hyperparameters"].get(axis), bool) for c in candidates):
            continue
        out[method] = (axis, sorted(candidates, key=lambda c: c["hyperparameters"][axis]))
    return out


def lambda_png(board: Leaderboard) -> bytes | None:
    """The λ-curve figure of one leaderboard, or ``None`` when no method varies in one numeric hyperparameter."""
    axes = curve_axes(board)
    if not axes:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    selected = {row.method: row.hyperparameters for row in board.rows}
    names = set()
    for i, (method, (axis, candidates)) in enumerate(sorted(axes.items())):
        colour = colours[i % len(colours)]
        names.add(axis)
        xs = [c["hyperparameters"][axis] for c in candidates]
        test = [100 * c["test"] if c["test"] is not None else float("nan") for c in candidates]
        val = [100 * c["validation"] if c["validation"] is not None else float("nan") for c in candidates]
        ax.plot(xs, test, "-o", color=colour, label=f"{method} (test)", markersize=4)
        if any(v == v for v in val):
            ax.plot(xs, val, "--", color=colour, label=f"{method} (validation)", alpha=0.7)
        chosen = selected.get(method, {}).get(axis)
        if chosen is not None:
            at = next((t for x, t in zip(xs, test) if x == chosen), None)
            if at is not None:
                ax.plot([chosen], [at], "*", color=colour, markersize=12)
    ax.set_xlabel(" / ".join(sorted(names)))
    ax.set_ylabel(f"average {board.metric} (%)")
    ax.set_title(f"{board.suite}: {board.metric} against the hyperparameter (★ selected on {board.select_on})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def heatmap_png(board: Leaderboard) -> bytes | None:
    """The method × task heatmap of test accuracy of one leaderboard (``None`` without tasks)."""
    if not board.tasks or not board.rows:
        return None
    plt = _pyplot()
    values = [[100 * row.tasks[t][0] if t in row.tasks else float("nan") for t in board.tasks] for row in board.rows]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(board.tasks), 0.8 + 0.45 * len(board.rows)))
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0, vmax=100)
    ax.set_xticks(range(len(board.tasks)), board.tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(board.rows)), [row.method for row in board.rows])
    for i, line in enumerate(values):
        for j, value in enumerate(line):
            if value == value:
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 60 else "black")
    fig.colorbar(image, ax=ax, label=f"test {board.metric} (%)")
    ax.set_title(f"{board.suite}: test {board.metric} per task")
    return _png(fig)


def figure_captions(boards: Sequence[Leaderboard]) -> dict[str, str]:
    """``{file name: caption}``: what each figure of :func:`figures` shows, in words (for ``fb report``)."""
    out: dict[str, str] = {}
    for board in boards:
        name = slug(board.suite)
        axes = curve_axes(board)
        if axes:
            by_axis: dict[str, list[str]] = {}
            for method, (axis, _) in sorted(axes.items()):
                by_axis.setdefault(axis, []).append(method)
            against = "; ".join(f"{', '.join(methods)} against {axis}" for axis, methods in by_axis.items())
            out[f"lambda-{name}.png"] = (
                f"{board.suite}: mean average {board.metric} over the seeds of each setting of {against}, on the "
                f"validation split (dashed) and the test split (solid); ★ marks the setting selected on the "
                f"{board.select_on} split.")
        if board.tasks and board.rows:
            out[f"heatmap-{name}.png"] = (
                f"{board.suite}: test {board.metric} (%) per task of each leaderboard row (the selected setting of "
                f"each method, mean over its seeds), rows in the leaderboard's order.")
    return out


def figures(boards: Sequence[Leaderboard]) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` of every figure of the leaderboards, in a stable order."""
    out: dict[str, bytes] = {}
    for board in boards:
        name = slug(board.suite)
        curves = lambda_png(board)
        if curves is not None:
            out[f"lambda-{name}.png"] = curves
        heat = heatmap_png(board)
        if heat is not None:
            out[f"heatmap-{name}.png"] = heat
    return out
