"""mini-compositional end to end on the real quick variant: ``fb run`` groups, ``fb compositional sweep`` and ``report``.

The quick variant is built in the configured cache when missing (about a minute on 2 cores; CI
builds mini-vision's quick suite first, whose pretrained encoder it copies). Sweeps write to a
private store under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionbench_vision.compositional import data as cd

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

FB = str(Path(sys.executable).with_name("fb"))


def fb(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSIONBENCH_PROGRESS": "0"}
    proc = subprocess.run([FB, *args], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def sweep(store: Path) -> list[dict]:
    """A small quick sweep (two methods, one permutation) into ``store``; the cells as JSON."""
    return json.loads(fb("compositional", "sweep", "--quick", "--methods", "simple_average,task_arithmetic",
                         "--permutations", "1", "--store", str(store), "--json").stdout)


@pytest.fixture
def sources():
    """Skip without the emoji packages (a failure under CI: a realdata test)."""
    if cd.missing_sources():
        pytest.skip(cd.missing_sources()[0])


def test_fb_run_reports_held_in_and_held_out_averages(sources, configured_cache):
    proc = fb("run", "-p", "mini-compositional", "-s", "modelpool.quick=true", "-s", "modelpool.n_models=3",
              "-s", "modelpool.permutation=1", "-m", "simple_average", "--json")
    report = json.loads(proc.stdout)
    groups = report["groups"]
    merged = [t for t in cd.held_in() if t in cd.subset_order(cd.held_in(), 1)[:3]]
    assert groups["held-in"]["tasks"] == merged
    assert groups["held-out"]["tasks"] == cd.held_out()
    assert sorted(groups["held-in, not merged"]["tasks"]) == sorted(set(cd.held_in()) - set(merged))
    assert set(report["tasks"]) == set(cd.pairs())
    for group in groups.values():
        expected = sum(report["tasks"][t]["accuracy"] for t in group["tasks"]) / len(group["tasks"])
        assert group["average"]["accuracy"] == pytest.approx(expected)
    table = fb("run", "-p", "mini-compositional", "-s", "modelpool.quick=true", "-m", "simple_average").stdout
    assert "average: held-in (8)" in table and "average: held-out (8)" in table


def test_sweep_resumes_and_report_matches_the_stored_runs(sources, configured_cache, tmp_path):
    store = tmp_path / "runs.sqlite3"
    first_cells = sweep(store)
    assert first_cells and all(row["status"] == "done" for row in first_cells)
    again = sweep(store)
    assert again and all(row["status"] == "stored" for row in again), "a second sweep runs nothing"
    out = json.loads(fb("compositional", "report", "--quick", "--store", str(store), "--json",
                        "-o", str(tmp_path / "fig")).stdout)
    methods = {row["method"]: row for row in out["methods"]}
    assert set(methods) == {"pretrained", "individual", "multitask", "simple_average", "task_arithmetic"}
    assert methods["task_arithmetic"]["hyperparameters"]["scaling_factor"] in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    # The simple average's held-out number is the mean over the held-out pairs of its stored test accuracies.
    runs = json.loads(fb("results", "--store", str(store), "--method", "simple_average", "--json").stdout)
    full = [r for r in runs if not r["modelpool"].get("n_models") and r["modelpool"].get("models", "experts") == "experts"]
    assert len(full) == 1
    stored = json.loads(fb("results", "show", str(full[0]["id"]), "--store", str(store), "--json").stdout)
    tasks = stored["report"]["splits"]["test"]["tasks"] if "report" in stored else stored["splits"]["test"]["tasks"]
    assert set(stored["predictions"]["test"]) == set(cd.pairs()), "per-example predictions of every pair (fb compare)"
    expected = sum(tasks[t]["accuracy"] for t in cd.held_out()) / len(cd.held_out())
    assert methods["simple_average"]["held-out"][0] == pytest.approx(expected)
    assert sorted(out["scaling"]["simple_average"]) == [str(k) for k in range(2, 9)] or \
        sorted(map(int, out["scaling"]["simple_average"])) == list(range(2, 9))
    assert set(out["sensitivity"]) == {"task_arithmetic"}
    for name in ("scatter.png", "scaling.png", "sensitivity.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Same store, same bytes; an existing figure is refused without --overwrite.
    first = (tmp_path / "fig" / "scatter.png").read_bytes()
    refused = fb("compositional", "report", "--quick", "--store", str(store), "-o", str(tmp_path / "fig"), check=False)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    fb("compositional", "report", "--quick", "--store", str(store), "-o", str(tmp_path / "fig"), "--overwrite")
    assert (tmp_path / "fig" / "scatter.png").read_bytes() == first
    markdown = fb("compositional", "report", "--quick", "--store", str(store)).stdout
    assert "## Held-in against held-out" in markdown and "Pearson r" in markdown


def test_report_on_an_empty_store_is_one_line_error(tmp_path):
    proc = fb("compositional", "report", "--store", str(tmp_path / "empty.sqlite3"), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("Error:") and len(proc.stderr.strip().splitlines()) == 1
