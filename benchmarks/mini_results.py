"""Results of the mini suites through ``fb sweep`` and ``fb table``: every installed method, 3 seeds.

One command, on a machine with the data sources installed::

    python benchmarks/mini_results.py                          # mini-vision, seeds 0-2, every method
    python benchmarks/mini_results.py --suites mini-text --methods simple_average task_arithmetic ties

For each suite it writes a sweep file (every installed method at its defaults; task arithmetic and
TIES over λ = 0.1 … 1.0), runs ``fb sweep --keep-going`` on it into the result store, and renders
``fb table`` (λ selected on validation, test reported, mean ± std over the seeds). The seeds are
the experts' training seeds (the mini pools follow the run seed). An interrupted run resumes: the
store keeps every finished cell. Beside the leaderboard the page gives the orderings the field
reports, as differences paired by seed with a Student-t interval over seeds, and the methods that
failed on the suite with their error.

Writes ``docs/results/mini-sweep.md`` (``-o``) and the sweep files beside it (``--specs``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [round(0.1 * i, 1) for i in range(1, 11)]
SWEPT = {"task_arithmetic": "scaling_factor", "ties": "scaling_factor"}
"""The methods whose λ is swept (the field's convention for these two); every other method runs at its defaults."""
SUITES = ("mini-vision", "mini-text")

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (intervals over seeds); past 10, 10's
(slightly wider than the exact interval)."""

ORDERINGS = (
    ("task_arithmetic", "simple_average", ">"),
    ("ties", "task_arithmetic", ">="),
    ("regmean", "task_arithmetic", ">"),
    ("layer_wise_adamerging", "task_arithmetic", ">"),
    ("simple_ensemble", "simple_average", ">="),
)
"""The orderings the field reports: (method, reference, relation)."""


def fb(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run this interpreter's ``fb``; its progress goes to our stderr."""
    done = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", *args], text=True,
                          stdout=subprocess.PIPE if capture else None)
    if check and done.returncode != 0:
        raise SystemExit(f"fb {' '.join(args)} exited {done.returncode}")
    return done


SPEC_HEADER = "# Written by benchmarks/mini_results.py (rewritten on each run)."
PAGE_HEADER = "# Mini suites: the leaderboard from the result store"


def refuse_foreign(path: Path, header: str) -> None:
    """Exit with one line when ``path`` exists and this script did not write it (it does not start with ``header``)."""
    if path.exists() and not path.read_text(errors="replace").startswith(header):
        raise SystemExit(f"{path}: exists and was not written by this script; not overwriting it")


def write_own(path: Path, text: str, header: str) -> None:
    """Write ``text`` to ``path`` through a temporary file; refuse to replace a file this script did not write."""
    refuse_foreign(path, header)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sweep_spec(suite: str, methods: list[str], seeds: list[int]) -> str:
    """The sweep file of one suite (YAML is a superset of JSON: one method per line)."""
    lines = [SPEC_HEADER, f"name: mini-results-{suite}", "methods:"]
    for name in methods:
        grid = {SWEPT[name]: SWEEP} if name in SWEPT else {}
        lines.append(f"  {name}: {json.dumps(grid)}")
    lines += [f"seeds: {json.dumps(seeds)}", f"suites: [{suite}]", "select_on: validation", "reference: true", ""]
    return "\n".join(lines)


def installed_methods() -> list[str]:
    """Every method ``fb methods`` lists."""
    return [entry["name"] for entry in json.loads(fb("methods", "--json").stdout)]


def seed_averages(store_path: str, rows: list[dict]) -> dict[str, dict[int, float]]:
    """Per leaderboard row (method): seed → the selected setting's test average, from the store."""
    from fusionbench_core.experiments.store import open_store

    out: dict[str, dict[int, float]] = {}
    with open_store(store_path) as store:
        metrics = store.metrics([i for row in rows for i in row["runs"]])
        for row in rows:
            out[row["method"]] = {}
            for seed, run_id in zip(row["seeds"], row["runs"]):
                test = metrics[run_id].get("test", {})
                out[row["method"]][seed] = statistics.fmean(m["accuracy"] for m in test.values())
    return out


def interval(differences: list[float]) -> str:
    """Mean difference with its 95 % interval over seeds (Student's t), in points."""
    mean = 100 * statistics.fmean(differences)
    if len(differences) < 2:
        return f"{mean:+.1f} (one seed, no interval)"
    half = 100 * T_975[min(len(differences) - 1, 10)] * statistics.stdev(differences) / len(differences) ** 0.5
    return f"{mean:+.1f} points, 95 % interval [{mean - half:+.1f}, {mean + half:+.1f}]"


def orderings(per_seed: dict[str, dict[int, float]]) -> list[str]:
    """One line per ordering of :data:`ORDERINGS`: holds or not, with the paired interval."""
    out = []
    for name, reference, relation in ORDERINGS:
        if name not in per_seed or reference not in per_seed:
            out.append(f"- {name} {relation} {reference}: not measured here.")
            continue
        seeds = sorted(set(per_seed[name]) & set(per_seed[reference]))
        if not seeds:
            out.append(f"- {name} {relation} {reference}: no seed measured for both.")
            continue
        diffs = [per_seed[name][s] - per_seed[reference][s] for s in seeds]
        mean = statistics.fmean(diffs)
        holds = mean > 0 if relation == ">" else mean >= 0
        a, b = (100 * statistics.fmean(per_seed[n][s] for s in seeds) for n in (name, reference))
        out.append(f"- {name} {relation} {reference}: {'holds' if holds else 'does not hold'}, "
                   f"{interval(diffs)} ({a:.1f} vs {b:.1f}).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=["mini-vision"], choices=SUITES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", help="only these methods (default: every installed one)")
    parser.add_argument("--store", help="result store (default: mini-results.sqlite3 beside fb's own store, so the "
                                        "leaderboard holds this script's runs alone)")
    parser.add_argument("--specs", type=Path, default=ROOT / "docs" / "results" / "sweeps",
                        help="where the sweep files are written (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "mini-sweep.md")
    parser.add_argument("--dry-run", action="store_true", help="write the sweep files and list their cells; run nothing")
    args = parser.parse_args()
    if not args.dry_run:
        refuse_foreign(args.output, PAGE_HEADER)  # before hours of sweeping, not after
    methods = args.methods or installed_methods()
    if args.store is None:
        from fusionbench_core.experiments.store import store_path_from_env

        args.store = str(store_path_from_env(None).with_name("mini-results.sqlite3"))
    store = ["--store", args.store]
    args.specs.mkdir(parents=True, exist_ok=True)
    sections = []
    for suite in args.suites:
        spec = args.specs / f"mini-results-{suite}.yaml"
        write_own(spec, sweep_spec(suite, methods, args.seeds), SPEC_HEADER)
        if args.dry_run:
            fb("sweep", str(spec), *store, "--dry-run", capture=False)
            continue
        # -k: a method that cannot run on the suite (alignment without a permutation spec, two-model
        # methods on eight) is listed with its error; rerunning retries only what failed or is left.
        swept = fb("sweep", str(spec), *store, "--keep-going", "--json", check=False)
        if swept.returncode not in (0, 1) or not swept.stdout.strip():  # 1: some cells failed, listed below
            raise SystemExit(f"fb sweep {spec} exited {swept.returncode}; rerun to resume")
        cells = json.loads(swept.stdout)
        table = fb("table", *store, "--suite", suite).stdout
        rows = json.loads(fb("table", *store, "--suite", suite, "--json").stdout)
        per_seed = seed_averages(args.store, rows)
        failed = sorted({(c["method"], c["error"]) for c in cells if c["status"] == "failed"})
        sections += [f"## {suite}", "", f"Sweep file: `{spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec}`; "
                     f"{len(cells)} cells, seeds {', '.join(map(str, args.seeds))}.", "", table.rstrip(), "",
                     "Orderings the field reports, on the test averages of the validation-selected settings "
                     "(differences paired by seed; the interval is over seeds, Student's t):", "",
                     *orderings(per_seed), ""]
        if failed:
            sections += ["Methods that failed on this suite (nothing stored for them; a rerun retries them):", "",
                         *[f"- `{m}`: {e}" for m, e in failed], ""]
    if args.dry_run:
        return
    text = "\n".join([PAGE_HEADER, "",
                      f"Produced by `python benchmarks/mini_results.py --suites {' '.join(args.suites)} "
                      f"--seeds {' '.join(map(str, args.seeds))}`: `fb sweep --keep-going` over every installed method, then `fb table`. Test accuracy, "
                      "hyperparameters selected on the whole validation split; the seeds are the experts' "
                      "training seeds. Store: `" + args.store.replace(str(Path.home()), "~") + "`.", "", *sections])
    write_own(args.output, text, PAGE_HEADER)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
