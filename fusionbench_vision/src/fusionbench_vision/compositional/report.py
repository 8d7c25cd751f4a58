"""``fb compositional``: Tam et al.'s protocol on mini-compositional, through ``fb sweep``'s machinery and result store.

- ``fb compositional sweep`` runs three sweeps (:func:`plan`) into the result store, each cell through
  :func:`fusionbench_core.experiments.sweep.run_sweep` (resumable, one transaction per cell):

  * ``compositional-main``: the paper's eight methods (MLERP, simple average, task arithmetic, DARE,
    TIES, Fisher, RegMean, MaTS) over their sensitivity grids, plus every other registered method
    that merges any number of models with its defaults (``--others``), on the full set of
    held-in experts, scored on validation and test; with the pretrained and individual references;
  * ``compositional-multitask``: the multitask model (``models=multitask``, returned unchanged by
    ``simple_average`` over that one model);
  * ``compositional-scaling``: 2 … N−1 experts from fixed seeded permutations (``--permutations``)
    for simple average, task arithmetic (λ = 0.3), TIES and MLERP at their defaults, scored on test.

- ``fb compositional report`` reads those runs back (:mod:`.analysis`) and prints Markdown (or
  ``--json``): the held-in / held-out table with the correlation across methods, the scaling table,
  the sensitivity curves and the cost table; with ``-o DIR`` it writes ``scatter.png``,
  ``scaling.png`` and ``sensitivity.png`` (each through a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from fusionbench_core.cli.groups import CONTEXT

SUITE = "mini-compositional"
PAPER_METHODS: tuple[tuple[str, dict[str, list[Any]]], ...] = (
    ("simple_average", {}),
    ("mlerp", {}),
    ("task_arithmetic", {"scaling_factor": [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]}),
    ("ties", {"scaling_factor": [0.3, 0.5, 0.7, 1.0, 1.5]}),
    ("dare", {"drop_rate": [0.1, 0.3, 0.5, 0.7, 0.9], "scaling_factor": [0.3]}),
    ("fisher_merging", {"cache": [False]}),
    ("regmean", {"alpha": [0.1, 0.3, 0.5, 0.7, 0.9, 0.95], "cache": [False]}),
    ("mats", {"cache": [False]}),
)
"""The paper's eight methods with the grids of the sensitivity curves (statistics recomputed per run, for the cost)."""
OTHER_METHODS: tuple[str, ...] = ("model_stock", "magmax", "breadcrumbs", "della", "dare_ties", "tsv_m", "iso_c",
                                  "iso_cts", "simple_ensemble")
"""The other registered data-free methods that fuse any number of models, run at their defaults (``--others``)."""
SCALING_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("simple_average", {}),
    ("task_arithmetic", {"scaling_factor": 0.3}),
    ("ties", {"scaling_factor": 0.3}),
    ("mlerp", {}),
)
"""The scaling sweep's methods at fixed settings (λ = 0.3 is task arithmetic's and TIES's default)."""
SENSITIVITY_AXES = {"task_arithmetic": "scaling_factor", "ties": "scaling_factor", "dare": "drop_rate",
                    "regmean": "alpha"}
SWEEPS = ("compositional-main", "compositional-multitask", "compositional-scaling")


def _suite(seed: int, quick: bool, **options: Any) -> Any:
    from fusionbench_core.config import ComponentSpec
    from fusionbench_core.experiments.sweep import Suite

    return Suite(ComponentSpec(SUITE, {"seed": seed, "quick": quick, **options}), ComponentSpec(SUITE, {}))


def plan(*, quick: bool, seeds: list[int], permutations: int, scaling: bool, others: bool,
         only: list[str] | None = None) -> list[Any]:
    """The three sweep specifications (main, multitask, scaling) for the given expert seeds.

    ``only`` keeps just the named methods in the main and scaling sweeps (the multitask sweep stays).
    """
    from fusionbench_core.experiments.sweep import SweepSpec

    from . import data

    methods = [(name, dict(grid)) for name, grid in PAPER_METHODS]
    if others:
        methods += [(name, {}) for name in OTHER_METHODS]
    keep = (lambda name: name in only) if only else (lambda name: True)
    methods = [(name, grid) for name, grid in methods if keep(name)]
    specs = [
        SweepSpec("compositional-main", methods, [0], [_suite(s, quick) for s in seeds], "validation", True),
        SweepSpec("compositional-multitask", [("simple_average", {})], [0],
                  [_suite(s, quick, models="multitask") for s in seeds], "validation", False),
    ]
    if scaling:
        n = len(data.held_in())
        suites = [_suite(s, quick, n_models=k, permutation=p) for s in seeds for k in range(2, n)
                  for p in range(1, permutations + 1)]
        specs.append(SweepSpec("compositional-scaling", [(m, {k: [v] for k, v in hp.items()})
                                                          for m, hp in SCALING_METHODS if keep(m)],
                               [0], suites, "test", False))
    return specs


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{text}'", param_hint="--seeds") from None
    if not seeds or any(s < 0 for s in seeds):
        raise click.BadParameter(f"expected non-negative integers, got '{text}'", param_hint="--seeds")
    return seeds


def store_option(func):
    """``--store PATH``, as the experiment commands take it."""
    return click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Result store (SQLite). Default: $FUSIONBENCH_STORE, else "
                             "$FUSIONBENCH_CACHE/results.sqlite3.")(func)


@click.group(name="compositional", context_settings=CONTEXT)
def compositional() -> None:
    """Tam et al.'s compositional-generalisation protocol on mini-compositional: sweep, then report.

    \b
    Examples:
      fb compositional sweep --seeds 0,1,2       # every cell the store lacks (resumable)
      fb compositional report -o figures/        # tables on stdout, PNGs in figures/
    """


@compositional.command(name="sweep", context_settings=CONTEXT)
@click.option("--quick", is_flag=True, help="The quick variant (as CI builds it).")
@click.option("--seeds", default="0", show_default=True, help="Expert seeds (comma-separated).")
@click.option("--permutations", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Seeded permutations per number of merged models (scaling).")
@click.option("--scaling/--no-scaling", default=True, show_default=True, help="Run the scaling sweep.")
@click.option("--others/--no-others", default=True, show_default=True,
              help="Also run the other registered data-free methods at their defaults.")
@click.option("--methods", "only", default="", help="Run only these methods (comma-separated; default: all).")
@store_option
@click.option("--dry-run", is_flag=True, help="List the cells and which are stored; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the cells as a JSON list.")
def sweep_command(quick: bool, seeds: str, permutations: int, scaling: bool, others: bool, only: str,
                  store_path: Path | None, dry_run: bool, as_json: bool) -> None:
    """Run the protocol's sweeps (main grid, multitask, scaling) into the result store; an interrupted one resumes.

    \b
    Examples:
      fb compositional sweep --quick --no-others --permutations 1
      fb compositional sweep --seeds 0,1,2 --store runs.sqlite3 --dry-run
    """
    from fusionbench_core.cli.render import print_json
    from fusionbench_core.cli.sweep import print_cells
    from fusionbench_core.experiments.store import open_store
    from fusionbench_core.experiments.sweep import run_sweep

    from fusionbench_core.plugins import get_host

    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {entry.name for entry in get_host().registry("method").entries()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown method '{unknown[0]}'", param_hint="--methods")
    specs = plan(quick=quick, seeds=_parse_seeds(seeds), permutations=permutations, scaling=scaling, others=others,
                 only=names or None)
    rows, interrupted = [], False
    with open_store(store_path) as store:
        for spec in specs:
            result = run_sweep(spec, store, dry_run=dry_run)
            rows += [{**row, "sweep": spec.name} for row in result.rows]
            if result.interrupted:
                interrupted = True
                break
        path = store.path
    if as_json:
        print_json(rows)
    else:
        print_cells(rows, title=f"fb compositional sweep ({'plan' if dry_run else 'cells'})")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "stored", "left")}
    summary = f"{counts['done']} run, {counts['stored']} already stored, {counts['left']} left (store: {path})"
    if interrupted:
        click.echo(f"interrupted: {summary}; run the same command to resume", err=True)
        raise SystemExit(130)
    click.echo(summary, err=True)


def collect(store: Any, *, quick: bool) -> list[dict[str, Any]]:
    """The records (:func:`.analysis.record`) of the variant's runs stored by ``fb compositional sweep``.

    Only the protocol's sweeps count (not ad-hoc ``fb run`` results); of runs with the same
    configuration, the latest.
    """
    from . import analysis, data
    from .data import subset_order

    held_in = data.held_in()
    latest: dict[str, dict[str, Any]] = {}
    for r in store.runs(suite=SUITE, kind=None):
        if r["sweep"] not in SWEEPS or r["modelpool"]["name"] != SUITE or bool(r["modelpool"].get("quick")) != quick:
            continue
        # One run per configuration: the latest (a rebuilt suite or an edited method reruns its cells).
        config = json.dumps([r["kind"], r["method"], r["hyperparameters"], r["modelpool"], r["taskpool"], r["seed"]],
                            sort_keys=True, default=str)
        latest[config] = r
    runs = sorted(latest.values(), key=lambda r: r["id"])
    metrics = store.metrics([r["id"] for r in runs])
    return [analysis.record(r, metrics[r["id"]], held_in, lambda p: subset_order(held_in, p)) for r in runs]


def build_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every table of the report as JSON-ready data."""
    from . import analysis, data

    held_out = data.held_out()
    order = {"pretrained": 0, "individual": 1, "multitask": 2}
    rows = sorted(analysis.method_table(records, held_out),
                  key=lambda r: (order.get(r["method"], 3), -(r[analysis.HELD_IN] or (0, 0))[0]))
    return {
        "held_in": data.held_in(), "held_out": held_out,
        "methods": rows,
        "correlation": analysis.correlation(rows),
        "scaling": analysis.scaling_table(records, held_out, dict(SCALING_METHODS)),
        "sensitivity": analysis.sensitivity_table(records, held_out, SENSITIVITY_AXES),
        "cost": analysis.cost_table(records),
        "runs": len(records),
    }


def _pct(value: Any) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    from .analysis import HELD_IN, HELD_OUT

    lines = [f"## Held-in against held-out (test accuracy %, mean ± std over expert seeds; {report['runs']} runs)", "",
             "| method | setting (chosen on held-in validation) | seeds | held-in | held-out |", "|---|---|---|---|---|"]
    for row in report["methods"]:
        hp = ", ".join(f"{k}={v}" for k, v in row["hyperparameters"].items() if k != "cache") or "–"
        lines.append(f"| {row['method']} | {hp} | {row['seeds']} | {_pct(row[HELD_IN])} | {_pct(row[HELD_OUT])} |")
    corr = report["correlation"]
    fmt = lambda v: "–" if v is None else f"{v:+.2f}"  # noqa: E731
    lines += ["", f"Correlation of held-in and held-out across the {corr['methods']} fusion methods (baselines "
                  f"excluded): Pearson r = {fmt(corr['pearson'])}, Spearman ρ = {fmt(corr['spearman'])}.", ""]
    if report["scaling"]:
        ks = sorted({k for by_k in report["scaling"].values() for k in by_k})
        lines += ["## Scaling with the number of merged models (test accuracy %, held-in / held-out)", "",
                  "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for method, by_k in report["scaling"].items():
            cells = [f"{100 * by_k[k][HELD_IN][0]:.1f} / {100 * by_k[k][HELD_OUT][0]:.1f}" if k in by_k else "–"
                     for k in ks]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if report["sensitivity"]:
        lines += ["## Sensitivity (test accuracy %, held-in / held-out; validation held-in in brackets)", ""]
        for method, curve in report["sensitivity"].items():
            points = "; ".join(f"{curve['axis']}={v}: {100 * i:.1f} / {100 * o:.1f} ({100 * va:.1f})"
                               if None not in (i, o, va) else f"{curve['axis']}={v}: –"
                               for v, i, o, va in curve["points"])
            lines.append(f"- **{method}**: {points}")
        lines.append("")
    lines += ["## Cost per run (mean ± std over every stored run of the method)", "",
              "| method | runs | fuse s | eval s | peak RSS MiB | forward passes | backward passes |",
              "|---|---|---|---|---|---|---|"]
    for row in report["cost"]:
        lines.append(f"| {row['method']} | {row['runs']} | {_num(row['fuse_s'])} | {_num(row['eval_s'])} | "
                     f"{_num(row['peak_rss_mb'], 0)} | {_num(row['forward_passes'], 0)} | "
                     f"{_num(row['backward_passes'], 0)} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, blob: bytes, overwrite: bool) -> None:
    from fusionbench_core.errors import ConfigError

    if path.exists() and not overwrite:
        raise ConfigError(f"'{path}' exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def figures(report: dict[str, Any]) -> dict[str, bytes]:
    """``{file name: PNG bytes}``: the held-in/held-out scatter, the scaling curves, the sensitivity curves."""
    from fusionbench_core.experiments.plots import _png, _pyplot

    from .analysis import HELD_IN, HELD_OUT

    plt = _pyplot()
    out = {}
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for row in report["methods"]:
        if not row[HELD_IN] or not row[HELD_OUT]:
            continue
        x, y = 100 * row[HELD_IN][0], 100 * row[HELD_OUT][0]
        marker, colour = ("s", "tab:red") if row["baseline"] else ("o", "tab:blue")
        ax.errorbar(x, y, xerr=100 * row[HELD_IN][1], yerr=100 * row[HELD_OUT][1], fmt=marker, color=colour,
                    ms=5, capsize=2, lw=0.8)
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    for row in report["methods"]:
        if row["method"] == "pretrained" and row[HELD_IN] and row[HELD_OUT]:
            ax.axvline(100 * row[HELD_IN][0], color="tab:red", ls=":", lw=0.8)
            ax.axhline(100 * row[HELD_OUT][0], color="tab:red", ls=":", lw=0.8)
        if row["method"] == "individual" and row[HELD_IN]:
            ax.axvline(100 * row[HELD_IN][0], color="tab:green", ls="--", lw=0.8)
            ax.annotate("individual experts (held-in)", (100 * row[HELD_IN][0], ax.get_ylim()[0]),
                        textcoords="offset points", xytext=(-4, 4), fontsize=7, rotation=90, ha="right",
                        va="bottom", color="tab:green")
    corr = report["correlation"]
    r = "–" if corr["pearson"] is None else f"{corr['pearson']:+.2f}"
    rho = "–" if corr["spearman"] is None else f"{corr['spearman']:+.2f}"
    ax.set_xlabel("held-in test accuracy (%)")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title(f"mini-compositional: held-in vs held-out (r = {r}, ρ = {rho})")
    ax.grid(alpha=0.3)
    out["scatter.png"] = _png(fig)
    if report["scaling"]:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
        for method, by_k in report["scaling"].items():
            ks = sorted(by_k)
            for ax, group in zip(axes, (HELD_IN, HELD_OUT)):
                ax.errorbar(ks, [100 * by_k[k][group][0] for k in ks], yerr=[100 * by_k[k][group][1] for k in ks],
                            marker="o", ms=3, capsize=2, lw=1, label=method)
        for ax, group in zip(axes, (HELD_IN, HELD_OUT)):
            ax.set_xlabel("merged models")
            ax.set_ylabel(f"{group} test accuracy (%)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle("mini-compositional: scaling with the number of merged models")
        out["scaling.png"] = _png(fig)
    if report["sensitivity"]:
        curves = list(report["sensitivity"].items())
        fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), squeeze=False)
        for ax, (method, curve) in zip(axes[0], curves):
            pts = [p for p in curve["points"] if None not in p]
            xs = [p[0] for p in pts]
            ax.plot(xs, [100 * p[1] for p in pts], marker="o", ms=3, label="held-in (test)")
            ax.plot(xs, [100 * p[2] for p in pts], marker="s", ms=3, label="held-out (test)")
            ax.plot(xs, [100 * p[3] for p in pts], ls="--", lw=1, label="held-in (validation)")
            ax.set_title(method)
            ax.set_xlabel(curve["axis"])
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("accuracy (%)")
        axes[0][0].legend(fontsize=7)
        out["sensitivity.png"] = _png(fig)
    return out


@compositional.command(name="report", context_settings=CONTEXT)
@click.option("--quick", is_flag=True, help="Report the quick variant's runs.")
@store_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Write scatter.png, scaling.png and sensitivity.png here.")
@click.option("--overwrite", is_flag=True, help="Replace figures that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of Markdown.")
def report_command(quick: bool, store_path: Path | None, output: Path | None, overwrite: bool, as_json: bool) -> None:
    """Held-in vs held-out per method and their correlation, scaling, sensitivity and cost, from the result store.

    \b
    Examples:
      fb compositional report
      fb compositional report --quick --store runs.sqlite3 -o figures/ --json
    """
    from fusionbench_core.cli.render import print_json
    from fusionbench_core.errors import ConfigError
    from fusionbench_core.experiments.store import open_store

    with open_store(store_path) as store:
        records = collect(store, quick=quick)
        path = store.path
    if not records:
        raise ConfigError(f"result store '{path}' holds no {SUITE} runs of the {'quick' if quick else 'full'} variant; "
                          f"run `fb compositional sweep{' --quick' if quick else ''}` first")
    report = build_report(records)
    if output is not None:
        for name, blob in figures(report).items():
            _write_atomic(output / name, blob, overwrite)
            click.echo(f"wrote {output / name}", err=True)
    if as_json:
        print_json(report)
    else:
        click.echo(markdown(report), nl=False)
