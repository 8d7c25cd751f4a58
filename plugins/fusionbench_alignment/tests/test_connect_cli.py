"""`fb connect` on the tiny suite (#24): outputs are never replaced without --overwrite, and a checkpoint
that does not fit the pool is one line naming the file."""

from __future__ import annotations

import json

import pytest

ARGS = ("-p", "tiny", "--points", "3")


def one_line_error(result, *needles):
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_connect_refuses_to_replace_its_outputs_unless_overwrite(fb_cli, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "connect.json").write_text("mine\n")
    one_line_error(fb_cli("connect", "task0", "task1", *ARGS, "-o", str(out)), f"'{out / 'connect.json'}' exists",
                   "--overwrite")
    assert (out / "connect.json").read_text() == "mine\n" and not (out / "connect.png").exists()
    done = fb_cli("connect", "task0", "task1", *ARGS, "-o", str(out), "--overwrite", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads((out / "connect.json").read_text())["task"] == done.json["task"]
    one_line_error(fb_cli("connect", "task0", "task1", *ARGS, "-o", str(out)), "connect.json' exists")
    assert sorted(p.name for p in out.iterdir()) == ["connect.json", "connect.png"]  # no temporary left


@pytest.fixture(scope="module")
def misfits(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    from fusionbench_core.tiny import TinyModelPool

    root = tmp_path_factory.mktemp("misfit")
    source = TinyModelPool().tensors("task0")
    state = {k: source.get(k).contiguous() for k in source.keys()}
    save_file(state, str(root / "good.safetensors"))
    save_file({**state, "3.weight": torch.zeros(8, 16, dtype=state["3.weight"].dtype)}, str(root / "narrow.safetensors"))
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(root / "other.safetensors"))
    data = (root / "good.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) - 100])
    return root


@pytest.mark.parametrize("name, needles", [
    ("narrow", ("does not fit model pool 'tiny'", "'3.weight'", "[8, 16]", "[16, 16]")),
    ("other", ("does not fit model pool 'tiny'", "another architecture")),
    ("truncated", ("truncated.safetensors",)),
])
def test_connect_with_a_checkpoint_that_does_not_fit_is_one_line_naming_it(fb_cli, misfits, tmp_path, name, needles):
    path = misfits / f"{name}.safetensors"
    one_line_error(fb_cli("connect", str(path), "task0", *ARGS, "-o", str(tmp_path / "c")), str(path), *needles)
    good = fb_cli("connect", str(misfits / "good.safetensors"), "task0", *ARGS, "-o", str(tmp_path / "g"), "--json")
    assert good.exit_code == 0, good.stderr
    assert good.json["paths"]["linear"]["loss_barrier"] == pytest.approx(0.0, abs=1e-9)  # task0 with itself


def test_the_barrier_matrix_figure_shows_its_values_and_task(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from fusionbench_alignment.report import plot

    texts, titles = [], []
    original_text, original_title = Axes.text, Axes.set_title
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: texts.append((x, y, s)) or original_text(
        self, x, y, s, *a, **k))
    monkeypatch.setattr(Axes, "set_title", lambda self, s, *a, **k: titles.append(s) or original_title(self, s, *a, **k))
    matrix = [[0.0, 0.125, 1.5], [0.125, 0.0, 0.25], [1.5, 0.25, 0.0]]
    result = {"task": "mnist", "models": ["init0", "init1", "init2"], "points": 5,
              "matrix": {"loss_barrier": matrix, "error_barrier": matrix}}
    plot(result, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    shown = {(x, y): s for x, y, s in texts}
    for i in range(3):
        for j in range(3):
            assert shown[(j, i)] == f"{matrix[i][j]:.3f}"  # every cell carries its value
    assert titles and all("mnist" in t for t in titles)
