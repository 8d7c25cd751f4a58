"""Cost of each method on a mini suite: accuracy with wall time, peak memory and the data it used.

Runs ``fb run -m METHOD -p SUITE --json`` once per method in its own process (so peak RSS is that
run's alone) and prints a Markdown table against task arithmetic, the data-free baseline:

    python benchmarks/mini_costs.py --suite mini-vision
    python benchmarks/mini_costs.py --suite mini-text --methods regmean fisher_merging
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_METHODS = [
    "task_arithmetic", "simple_ensemble", "fisher_merging", "regmean", "regmean_plusplus", "mats",
    "task_wise_adamerging", "layer_wise_adamerging",
]


def run_method(fb: Path, method: str, suite: str, extra: list[str], out: Path) -> dict:
    """One ``fb run`` in a child process; returns its report (or an error row)."""
    env = {**os.environ, "FUSIONBENCH_PROGRESS": "0"}
    proc = subprocess.run([str(fb), "run", "-m", method, "-p", suite, "--json", "-o", str(out / method), *extra],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"method": method, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout)


def main() -> None:
    """Parse options, run every method, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="mini-vision")
    parser.add_argument("--methods", nargs="*", default=DEFAULT_METHODS)
    parser.add_argument("-s", "--set", dest="settings", action="append", default=[],
                        help="passed to every fb run as -s KEY=VALUE (e.g. modelpool.quick=true)")
    args = parser.parse_args()
    fb = Path(sys.executable).with_name("fb")
    extra = [item for pair in args.settings for item in ("-s", pair)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            report = run_method(fb, method, args.suite, extra, Path(tmp))
            rows.append(report)
            print(f"{method}: {report.get('average', report.get('error'))}", file=sys.stderr)
    baseline = next((r for r in rows if r.get("method") == "task_arithmetic" and "average" in r), None)
    print(f"| method | requirement | avg accuracy % | Δ vs task arithmetic | fuse s | peak RSS MB | examples | forward | backward |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | – | failed: {r['error']} | | | | | | |")
            continue
        acc = 100 * r["average"]["accuracy"]
        delta = f"{acc - 100 * baseline['average']['accuracy']:+.1f}" if baseline else "–"
        cost = r["cost"]
        print(f"| {r['method']} | {r['requirement']} | {acc:.1f} | {delta} | {cost['fuse_s']:.1f} | "
              f"{cost['peak_rss_mb']:.0f} | {cost.get('examples', 0)} | {cost.get('forward_passes', 0)} | "
              f"{cost.get('backward_passes', 0)} |")


if __name__ == "__main__":
    main()
