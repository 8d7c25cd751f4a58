"""The quick independent suites end to end: build (deterministic, resumable), every alignment method through
``fb run``, and ``fb connect`` writing its JSON and PNG (real MNIST-5k from the offline sources)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fusionbench_alignment")

from fusionbench_vision.independent import build as ib  # noqa: E402
from fusionbench_vision.mini.data import missing_sources  # noqa: E402

pytestmark = pytest.mark.realdata

QUICK = ("-s", "modelpool.quick=true")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """A private cache for the module; skips when MNIST-5k's source is not installed."""
    gone = missing_sources("mnist")
    if gone:
        pytest.skip(gone[0])
    root = tmp_path_factory.mktemp("fbcache-independent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONBENCH_CACHE", str(root))
        yield root


def run(fb_cli, *args):
    result = fb_cli("run", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json


def test_build_is_deterministic_and_resumes(tmp_path, monkeypatch):
    suite = ib.SUITES["independent-mlp"]
    first = suite.build(quick=True, seed=0)
    assert first["trained"] == ["init0", "init1"]
    assert suite.build(quick=True, seed=0)["trained"] == []
    bytes_a = (suite.model_dir(True, 0, "init1") / "model.safetensors").read_bytes()
    (suite.model_dir(True, 0, "init1") / "model.safetensors").unlink()
    assert suite.build(quick=True, seed=0)["trained"] == ["init1"]
    assert (suite.model_dir(True, 0, "init1") / "model.safetensors").read_bytes() == bytes_a


@pytest.mark.parametrize("method", ["weight_matching", "activation_matching", "ot_fusion", "zipit"])
def test_every_alignment_method_runs_on_the_quick_mlp_suite_and_beats_the_naive_average(fb_cli, method):
    naive = run(fb_cli, "-m", "simple_average", "-p", "independent-mlp", *QUICK)
    report = run(fb_cli, "-m", method, "-p", "independent-mlp", *QUICK)
    assert report["tasks"].keys() == {"mnist"}
    assert report["average"]["accuracy"] > naive["average"]["accuracy"] + 0.05
    assert report["average"]["loss"] < naive["average"]["loss"]


def test_alignment_methods_run_on_the_quick_cnn_and_halves_suites(fb_cli):
    report = run(fb_cli, "-m", "weight_matching", "-p", "independent-cnn", *QUICK)
    assert report["cost"]["bn_reset"] == 1 and 0.0 <= report["average"]["accuracy"] <= 1.0
    naive = run(fb_cli, "-m", "simple_average", "-p", "independent-mlp-halves", *QUICK)
    zipped = run(fb_cli, "-m", "zipit", "-s", "zip_layers=1", "-p", "independent-mlp-halves", *QUICK)
    assert zipped["tasks"].keys() == {"mnist", "mnist_0_4", "mnist_5_9"}
    # The partially zipped model covers both halves, where the naive average is at chance on one.
    for half in ("mnist_0_4", "mnist_5_9"):
        assert zipped["tasks"][half]["accuracy"] > naive["tasks"][half]["accuracy"] + 0.1


def test_weight_matching_then_another_method(fb_cli):
    plain = run(fb_cli, "-m", "weight_matching", "-p", "independent-mlp", *QUICK)
    chained = run(fb_cli, "-m", "weight_matching", "-s", "then=simple_average", "-p", "independent-mlp", *QUICK)
    assert chained["average"] == pytest.approx(plain["average"], abs=1e-6)


def test_fb_connect_writes_json_and_png_and_alignment_lowers_the_barrier(fb_cli, tmp_path):
    out = tmp_path / "connect"
    result = fb_cli("connect", "init0", "init1", "-p", "independent-mlp", *QUICK, "--align", "weight_matching",
                    "--curve", "--curve-steps", "60", "--curve-lr", "0.01", "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "connect.json").read_text())
    assert (out / "connect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    linear, aligned = data["paths"]["linear"], data["paths"]["aligned (weight_matching)"]
    assert len(linear["alpha"]) == 25 and data["task"] == "mnist"
    assert linear["loss_barrier"] > aligned["loss_barrier"]
    assert data["paths"]["bezier"]["loss"][0] == linear["loss"][0] == aligned["loss"][0]
    assert data["paths"]["bezier"]["loss_barrier"] < linear["loss_barrier"]


def test_fb_connect_matrix_and_checkpoint_paths_with_batchnorm(fb_cli, tmp_path):
    result = fb_cli("connect", "-p", "independent-cnn", *QUICK, "-s", "modelpool.n_models=3", "--points", "5",
                    "--examples", "200", "-o", str(tmp_path / "m"), "--json")
    assert result.exit_code == 0, result.stderr
    matrix = result.json["matrix"]["loss_barrier"]
    assert [matrix[i][i] for i in range(3)] == [0.0, 0.0, 0.0]
    assert all(matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))
    model_dir = ib.SUITES["independent-cnn"].model_dir(True, 0, "init0")
    same = fb_cli("connect", str(model_dir), "init0", "-p", "independent-cnn", *QUICK, "--points", "3",
                  "--examples", "200", "-o", str(tmp_path / "p"), "--json")
    assert same.exit_code == 0, same.stderr
    assert same.json["paths"]["linear"]["loss_barrier"] == pytest.approx(0.0, abs=1e-9)


def test_fb_connect_errors_are_one_line(fb_cli):
    result = fb_cli("connect", "init0", "nope", "-p", "independent-mlp", *QUICK)
    assert result.exit_code == 1
    assert "'nope' is neither a model of pool 'independent-mlp'" in result.stderr
