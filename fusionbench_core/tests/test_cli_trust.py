"""CLI reliability (#24): no command writes over a user's file, a checkpoint that does not fit is one
line naming it, tables people can read at 80-100 columns, an unreachable Ray cluster fails fast."""

from __future__ import annotations

import pytest

from fusionbench_core.experiments.store import open_store


def one_line_error(result, *needles):
    """The command failed with one ``Error:`` line that holds every needle, and no traceback."""
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def toy_report(method, hps, seed, test, val=None, tasks=("a", "b"), pool="toy"):
    """A run report with the same accuracy ``test`` (and ``val``) on every task."""
    def split(value):
        per = {t: {"accuracy": value} for t in tasks}
        return {"tasks": per, "average": {"accuracy": value}}

    splits = {"test": split(test)}
    if val is not None:
        splits["validation"] = split(val)
    return {"method": method, "hyperparameters": dict(hps), "modelpool": {"name": pool}, "taskpool": {"name": pool},
            "tasks": split(test)["tasks"], "average": split(test)["average"], "cost": {"wall_s": 0.5}, "seed": seed,
            "versions": {}, "split": "test", "splits": splits}


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "r.sqlite3"
    with open_store(path) as store:
        store.add("k1", toy_report("ties", {"scaling_factor": 0.3}, 0, 0.5, 0.6))
    return path


# -- 4. outputs never replace a user's file ------------------------------------------------------


def test_table_output_refuses_an_existing_file_unless_overwrite(fb_cli, store_path, tmp_path):
    mine = tmp_path / "table.md"
    mine.write_text("my notes\n")
    one_line_error(fb_cli("table", "--store", str(store_path), "-o", str(mine)), f"'{mine}' exists", "--overwrite")
    assert mine.read_text() == "my notes\n"
    ok = fb_cli("table", "--store", str(store_path), "-o", str(mine), "--overwrite")
    assert ok.exit_code == 0, ok.stderr
    assert mine.read_text() == fb_cli("table", "--store", str(store_path)).stdout
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("r.sqlite3"))  # SQLite's own aside
    assert left == ["table.md"]  # no temporary left behind
    fresh = tmp_path / "new.md"
    assert fb_cli("table", "--store", str(store_path), "-o", str(fresh)).exit_code == 0 and fresh.exists()


# -- 6. checkpoints that do not fit --------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny model saved by fb run, and broken variants: another width, another architecture, truncated."""
    import torch
    from safetensors.torch import load_file, save_file

    from fusionbench_core.testing import invoke_fb

    root = tmp_path_factory.mktemp("ckpt")
    out = invoke_fb("run", "-p", "tiny", "--save-model", "-o", str(root / "run"), "--no-store")
    assert out.exit_code == 0, out.stderr
    good = root / "run" / "model" / "model.safetensors"
    state = load_file(str(good))
    made = {}
    for name, changed in (("wider", {**state, "0.weight": torch.zeros(32, 8, dtype=state["0.weight"].dtype)}),
                          ("other", {"encoder.weight": torch.zeros(3, 3)}),
                          ("fewer", {k: v for k, v in state.items() if k != "3.bias"})):
        (root / name).mkdir()
        save_file(changed, str(root / name / "model.safetensors"))
        made[name] = root / name
    data = good.read_bytes()
    for name, cut in (("truncated", len(data) // 2), ("header", 5)):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(data[:cut])
        made[name] = root / name
    made["good"] = good.parent
    return made


CASES = [("wider", ("does not fit model pool 'tiny'", "'0.weight'", "[32, 8]", "[16, 8]")),
         ("other", ("does not fit model pool 'tiny'", "'encoder.weight'", "another architecture")),
         ("fewer", ("does not fit model pool 'tiny'", "missing", "'3.bias'")),
         ("truncated", ("model.safetensors",)),
         ("header", ("model.safetensors",))]


@pytest.mark.parametrize("case, needles", CASES, ids=[c for c, _ in CASES])
def test_eval_of_a_checkpoint_that_does_not_fit_is_one_line_naming_it(fb_cli, checkpoints, case, needles):
    out = fb_cli("eval", str(checkpoints[case]), "-p", "tiny")
    line = one_line_error(out, *needles)
    assert str(checkpoints[case]) in line and "RuntimeError" not in line
    assert fb_cli("eval", str(checkpoints["good"]), "-p", "tiny", "--json").exit_code == 0


# -- 5. output people can use --------------------------------------------------------------------

LONG = {"layer_wise_adamerging": {"init_value": 0.3, "entropy_steps": 500, "learning_rate": 0.001},
        "sparse_wemoe_with_shared_router": {"tv_prune_ratio": 0.9, "router_hidden": 2},
        "task_arithmetic": {"scaling_factor": 0.3}}


@pytest.fixture
def long_store(tmp_path):
    path = tmp_path / "long.sqlite3"
    with open_store(path) as store:
        for i, (method, hps) in enumerate(LONG.items()):
            store.add(f"{i}" * 64, toy_report(method, hps, 0, 0.5, 0.4, tasks=("emoji_subcategory", "mnist"),
                                              pool="mini-vision"))
    return path


def hp_text(hps):
    return ", ".join(f"{k}={v}" for k, v in hps.items())


@pytest.mark.parametrize("columns", ["80", "100"])
def test_results_never_truncate_a_name_at_80_or_100_columns(fb_cli, long_store, columns):
    out = fb_cli("results", "--store", str(long_store), env={"COLUMNS": columns})
    assert out.exit_code == 0, out.stderr
    assert "…" not in out.stdout
    for method, hps in LONG.items():
        assert method in out.stdout
        for key, value in hps.items():
            assert f"{key}={value}" in out.stdout
    for i in range(3):
        assert f"{i}" * 12 in out.stdout  # the key prefix one types for `fb results show`
    assert "mini-vision" in out.stdout
    assert all(len(line) <= int(columns) for line in out.stdout.splitlines() if "─" in line or "│" in line)


@pytest.mark.parametrize("columns", ["80", "100"])
def test_sweep_listing_never_truncates_a_name_at_80_or_100_columns(fb_cli, tmp_path, columns):
    spec = tmp_path / "s.yaml"
    spec.write_text("methods:\n  task_arithmetic: {scaling_factor: [0.125, 0.375]}\n  ties: {scaling_factor: 0.3, "
                    "density: 0.2}\nsuites: [{modelpool: {name: tiny, n_models: 2}, taskpool: {name: tiny, n_models: 2}}]\n")
    out = fb_cli("sweep", str(spec), "--store", str(tmp_path / "r.sqlite3"), "--dry-run", env={"COLUMNS": columns})
    assert out.exit_code == 0, out.stderr
    assert "…" not in out.stdout
    for needle in ("task_arithmetic", "scaling_factor=0.125", "scaling_factor=0.375", "density=0.2",
                   "tiny[n_models=2]", "_pretrained_", "_individual_"):
        assert needle in out.stdout, needle


def test_leaderboards_give_the_seed_count_and_no_plus_minus_for_one_seed(fb_cli, tmp_path):
    path = tmp_path / "r.sqlite3"
    with open_store(path) as store:
        store.add("a1", toy_report("ties", {"scaling_factor": 0.3}, 0, 0.50, 0.6))
        store.add("a2", toy_report("ties", {"scaling_factor": 0.3}, 1, 0.60, 0.6))
        store.add("b1", toy_report("dare", {"p": 0.5}, 0, 0.40, 0.5))
    md = fb_cli("table", "--store", str(path)).stdout
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "| seeds |" in header
    ties = next(line for line in md.splitlines() if line.startswith("| ties "))
    dare = next(line for line in md.splitlines() if line.startswith("| dare "))
    assert "| 55.0 ± 7.1 |" in ties and "| 2 |" in ties  # mean and sample std of 50 and 60
    assert "±" not in dare and "| 40.0 |" in dare and "| 1 |" in dare
    html = fb_cli("table", "--store", str(path), "-f", "html").stdout
    assert "<td>40.0</td>" in html and "<th>seeds</th>" in html
    tex = fb_cli("table", "--store", str(path), "-f", "latex").stdout
    assert r"55.0$\pm$7.1" in tex and r"40.0$\pm$" not in tex


def test_a_run_below_its_pretrained_reference_warns_in_one_line(fb_cli, tmp_path):
    db = tmp_path / "r.sqlite3"
    pool = ("-p", "tiny", "-s", "modelpool.n_models=2", "-s", "taskpool.n_models=2")
    quiet = fb_cli("run", *pool, "--store", str(db), "-o", str(tmp_path / "r0"), "--json")
    assert quiet.exit_code == 0 and "warning:" not in quiet.stderr  # no reference stored: nothing to say
    score = quiet.json["average"]["accuracy"]

    def reference(key, accuracy, seed=0):
        with open_store(db) as store:
            report = toy_report("_pretrained_", {}, seed, accuracy, tasks=("task0", "task1"), pool="tiny")
            report["modelpool"] = report["taskpool"] = {"name": "tiny", "n_models": 2}
            store.add(key, report, kind="pretrained")

    reference("ref-other-seed", min(1.0, score + 0.2), seed=5)  # another seed's reference: not this run's
    assert "warning:" not in fb_cli("run", *pool, "--store", str(db), "-o", str(tmp_path / "r1")).stderr
    reference("ref-low", max(0.0, score - 0.2))
    assert "warning:" not in fb_cli("run", *pool, "--store", str(db), "-o", str(tmp_path / "r2")).stderr
    reference("ref-high", min(1.0, score + 0.1))  # the latest reference of the pool and seed counts
    out = fb_cli("run", *pool, "--store", str(db), "-o", str(tmp_path / "r3"))
    assert out.exit_code == 0
    warnings = [line for line in out.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "below" in warnings[0]
    assert f"{100 * score:.1f} %" in warnings[0] and f"{100 * min(1.0, score + 0.1):.1f} %" in warnings[0]
    assert "task_arithmetic" in warnings[0] and "pretrained" in warnings[0]


# -- 7. an unreachable Ray cluster ----------------------------------------------------------------


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_sweep_to_an_unreachable_ray_address_fails_within_seconds_naming_it(tmp_path, scheme):
    import os
    import subprocess
    import sys
    import time

    pytest.importorskip("ray")
    spec = tmp_path / "s.yaml"
    spec.write_text("methods: {task_arithmetic: {}}\nsuites: [tiny]\n")
    address = f"{scheme}127.0.0.1:{_free_port()}"  # nothing listens there
    store = tmp_path / "r.sqlite3"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "fusionbench_core.cli", "sweep", str(spec), "--store", str(store),
                               "--executor", "ray", "--address", address], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "FUSIONBENCH_PROGRESS": "0"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"fb sweep --address {address} gave no answer within 60 s")
    elapsed = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error:"), done.stderr
    assert f"'{address}'" in lines[0] and "cannot reach" in lines[0]
    assert elapsed < 30 and not store.exists()
