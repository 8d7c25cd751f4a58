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
