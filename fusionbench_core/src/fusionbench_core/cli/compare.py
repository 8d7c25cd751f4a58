"""``fb compare A B``: paired bootstrap interval of the accuracy difference of two stored runs."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json, print_mapping
from .sweep import store_option


@click.command(name="compare", context_settings=CONTEXT)
@click.argument("run_a")
@click.argument("run_b")
@store_option
@click.option("--split", default="test", show_default=True, help="Split whose predictions are paired.")
@click.option("--resamples", type=click.IntRange(min=1), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def compare_command(run_a: str, run_b: str, store_path: Path | None, split: str, resamples: int, level: float,
                    seed: int, as_json: bool) -> None:
    """Paired bootstrap interval of accuracy(A) − accuracy(B) on the same test examples.

    A and B are run ids or cell-key prefixes (`fb results`). Examples are resampled within each task,
    the same indices for both runs; the difference is of the average over tasks.

    \b
    Examples:
      fb compare 4 7
      fb compare 4 7 --resamples 10000 --json
    """
    from ..experiments.stats import paired_bootstrap, paired_differences
    from ..experiments.store import StoreError, open_store

    with open_store(store_path, readonly=True) as store:
        a, b = store.find(run_a), store.find(run_b)
        preds = []
        for label, row in (("A", a), ("B", b)):
            found = store.predictions(row["id"], split)
            if not found:
                raise StoreError(f"run {row['id']} ({label}) has no stored predictions on the {split} split "
                                 f"(its task pool reports none; see docs/experiments.md)")
            preds.append(found)
    diffs = paired_differences(preds[0], preds[1], names=(str(a["id"]), str(b["id"])))
    result = paired_bootstrap(diffs, resamples=resamples, seed=seed, level=level)
    result = {"a": a["id"], "b": b["id"], "method_a": a["method"], "method_b": b["method"], "split": split, **result}
    if as_json:
        print_json(result)
        return
    print_mapping(f"accuracy({a['method']} #{a['id']}) − accuracy({b['method']} #{b['id']}), {split} split", {
        "difference": f"{100 * result['difference']:+.2f} points",
        f"{int(round(level * 100))}% interval": f"[{100 * result['lower']:+.2f}, {100 * result['upper']:+.2f}] points",
        "p-value": f"{result['p_value']:.4f}",
        "examples": result["examples"],
        "resamples": f"{resamples} (seed {seed})",
    })
