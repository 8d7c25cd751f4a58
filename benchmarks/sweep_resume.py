"""Issue #16's "Done when", end to end: a sweep killed halfway resumes; Ray stores what serial stores.

One command (the data sources installed, the suite built or buildable)::

    python benchmarks/sweep_resume.py                       # benchmarks/sweeps/mini-vision-lambda.yaml
    python benchmarks/sweep_resume.py --spec my.yaml --out /tmp/demo --no-ray

Steps, each through the ``fb`` command line as a user runs it, into stores under ``--out`` (a new
directory):

1. ``fb sweep SPEC --store serial.sqlite3`` in a child process, killed with SIGKILL (no clean-up,
   as a power loss) once half of the cells are recorded;
2. the store's integrity, then the same command again: it must skip every recorded cell, run the
   others, and leave exactly one run per cell;
3. ``fb sweep SPEC --executor ray --num-cpus 2 --store ray.sqlite3``: every stored metric and
   prediction is compared with the serial store's, value for value;
4. ``fb table`` (the leaderboard, validation-selected) and ``fb report``, the page rendered in
   headless Chromium: the rows a reader sees and the figures the browser decoded.

Prints what it measured as JSON on stdout; the leaderboard, the report and the logs stay in ``--out``.
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "benchmarks" / "sweeps" / "mini-vision-lambda.yaml"


def fb(*args: str, log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``fb`` (this interpreter's), its stderr appended to ``log``."""
    with open(log, "a") if log else open(os.devnull, "w") as err:
        done = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", *args], stdout=subprocess.PIPE,
                              stderr=err, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"fb {' '.join(args)} exited {done.returncode} (log: {log})")
    return done


def recorded(db: Path) -> int:
    """Runs in a store (0 while it does not exist), read without disturbing the writer."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def rows(db: Path, query: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def metrics(db: Path) -> dict[tuple, float]:
    return {r[:4]: r[4] for r in rows(db, "SELECT r.cell_key, m.split, m.task, m.metric, m.value"
                                          " FROM metrics m JOIN runs r ON r.id = m.run_id")}


def predictions(db: Path) -> dict[tuple, tuple]:
    return {r[:3]: r[3:] for r in rows(db, "SELECT r.cell_key, p.split, p.task, p.predicted, p.target"
                                           " FROM predictions p JOIN runs r ON r.id = p.run_id")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=SPEC, help="sweep file (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="a new directory for the stores, logs and page (default: a temp dir)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    args = parser.parse_args()
    if args.out is None:
        out = Path(tempfile.mkdtemp(prefix="fb-sweep-resume-"))
    else:
        out = args.out
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out}: exists and is not empty (this script writes only into a new directory)")
        out.mkdir(parents=True, exist_ok=True)
    os.environ["FUSIONBENCH_PROGRESS"] = "1"  # one line per recorded cell in the logs (stderr is not a terminal)
    spec, serial, log = str(args.spec), out / "serial.sqlite3", out / "serial.log"
    failures: list[str] = []
    result: dict = {"spec": spec, "out": str(out)}

    plan = json.loads(fb("sweep", spec, "--store", str(out / "plan.sqlite3"), "--dry-run", "--json").stdout)
    total = len(plan)
    result["cells"] = {"total": total, "fused": sum(r["kind"] == "fused" for r in plan)}

    # 1. killed halfway, as a power loss would
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "fusionbench_core.cli", "sweep", spec, "--store", str(serial)],
                             stdout=subprocess.DEVNULL, stderr=open(log, "a"))
    while child.poll() is None and recorded(serial) < total // 2:
        time.sleep(0.2)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait()
    killed_s = time.perf_counter() - start
    before = {key: rid for rid, key in rows(serial, "SELECT id, cell_key FROM runs")}
    integrity = rows(serial, "PRAGMA integrity_check")[0][0]
    result["killed"] = {"after_s": round(killed_s, 1), "returncode": child.returncode, "recorded": len(before),
                        "integrity": integrity}
    if integrity != "ok":
        failures.append(f"store after the kill: integrity_check says {integrity}")

    # 2. the same command resumes
    start = time.perf_counter()
    resumed = json.loads(fb("sweep", spec, "--store", str(serial), "--json", log=log).stdout)
    resume_s = time.perf_counter() - start
    status = {s: sum(r["status"] == s for r in resumed) for s in ("done", "stored", "left")}
    after = rows(serial, "SELECT id, cell_key FROM runs")
    kept = all(dict((k, i) for i, k in after).get(k) == i for k, i in before.items())
    result["resumed"] = {"seconds": round(resume_s, 1), **status, "runs_in_store": len(after),
                         "recorded_runs_untouched": kept}
    if status["stored"] != len(before) or status["done"] != total - len(before) or status["left"]:
        failures.append(f"resume: {status} after {len(before)} recorded of {total}")
    if len(after) != total or len({k for _, k in after}) != total or not kept:
        failures.append(f"resume: {len(after)} runs for {total} cells, recorded runs untouched: {kept}")
    again = json.loads(fb("sweep", spec, "--store", str(serial), "--json", log=log).stdout)
    if any(r["status"] != "stored" for r in again):
        failures.append("a third run of the sweep still had cells to run")

    # 3. Ray on a local 2-CPU instance
    if not args.no_ray:
        start = time.perf_counter()
        fb("sweep", spec, "--store", str(out / "ray.sqlite3"), "--executor", "ray", "--num-cpus", "2", "--json",
           log=out / "ray.log")
        ray_s = time.perf_counter() - start
        a, b = metrics(serial), metrics(out / "ray.sqlite3")
        pa, pb = predictions(serial), predictions(out / "ray.sqlite3")
        differing = sum(a[k] != b.get(k) for k in a) + len(b.keys() - a.keys())
        pred_diff = sum(pa[k] != pb.get(k) for k in pa) + len(pb.keys() - pa.keys())
        result["ray"] = {"seconds": round(ray_s, 1), "metrics": len(a), "metrics_differing": differing,
                         "prediction_arrays": len(pa), "predictions_differing": pred_diff}
        if differing or pred_diff or not a:
            failures.append(f"ray: {differing} of {len(a)} metrics and {pred_diff} of {len(pa)} predictions differ")

    # 4. the leaderboard and the page
    name = next(r for r in plan if r["kind"] == "fused")["suite"]
    table = fb("table", "--store", str(serial), log=log).stdout
    (out / "leaderboard.md").write_text(table)
    table_json = json.loads(fb("table", "--store", str(serial), "--json", log=log).stdout)
    result["leaderboard"] = [{"suite": r["suite"], "method": r["method"], "hyperparameters": r["hyperparameters"],
                              "test_average": r["average"], "normalised": r["normalised"], "seeds": r["seeds"]}
                             for r in table_json]
    page = out / "report.html"
    fb("report", "--store", str(serial), "-o", str(page), log=log)
    from fusionbench_core.experiments.report import find_browser, rendered_page

    if find_browser() is None:
        failures.append("no chromium to render the report")
    else:
        seen = rendered_page(page, out / "browser-profile")
        expected = [r["method"] for r in table_json]
        result["report"] = {"bytes": page.stat().st_size, "script_ran": seen["loaded"],
                            "rows_seen": seen["rows"], "image_widths": seen["image_widths"]}
        if not seen["loaded"] or seen["rows"][:len(expected)] != expected:
            failures.append(f"report: rows seen {seen['rows']} against the leaderboard's {expected}")
        if not seen["image_widths"] or min(seen["image_widths"]) == 0:
            failures.append(f"report: figures not decoded ({seen['image_widths']})")
    result["suite"] = name
    result["failures"] = failures
    print(json.dumps(result, indent=1))
    print(table, file=sys.stderr)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
