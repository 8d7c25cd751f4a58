"""``fb agree``: a hand-made store or a JSON file against a shipped leaderboard (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fusionbench_core.experiments.store import open_store

B32 = "fusionbench-clip-vit-b32-ta8"


def report(method, lam, seed, test, val):
    """A two-task run report of suite 'toy' with the same accuracy on both tasks."""
    def split(value):
        return {"tasks": {"a": {"accuracy": value}, "b": {"accuracy": value}}, "average": {"accuracy": value}}

    return {"method": method, "hyperparameters": {} if lam is None else {"scaling_factor": lam},
            "modelpool": {"name": "toy"}, "taskpool": {"name": "toy"}, "tasks": split(test)["tasks"],
            "average": split(test)["average"], "cost": {"wall_s": 1.0}, "seed": seed, "versions": {},
            "split": "test", "splits": {"test": split(test), "validation": split(val)}}


def make_store(path, *, second_setting=True):
    """TA's λ = 0.3 wins on validation (test 0.60), λ = 0.7 on test (0.90); references 0.40 and 0.95."""
    with open_store(path) as store:
        store.add("ta3", report("task_arithmetic", 0.3, 0, test=0.60, val=0.80))
        if second_setting:
            store.add("ta7", report("task_arithmetic", 0.7, 0, test=0.90, val=0.50))
        store.add("ties", report("ties", None, 0, test=0.70, val=0.70))
        store.add("regmean", report("regmean", None, 0, test=0.75, val=0.75))
        store.add("avg", report("simple_average", None, 0, test=0.55, val=0.60))
        store.add("mine", report("my_method", None, 0, test=0.10, val=0.10))
        store.add("pre", report("_pretrained_", None, 0, test=0.40, val=0.40), kind="pretrained")
        store.add("ind", report("_individual_", None, 0, test=0.95, val=0.95), kind="individual")
    return path


@pytest.fixture
def store_path(tmp_path):
    """The store of :func:`make_store`."""
    return make_store(tmp_path / "r.sqlite3")


def one_error_line(out, *fragments):
    assert out.exit_code == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_shows_every_shipped_leaderboard(fb_cli):
    rows = fb_cli("agree", "--list", "--json").json
    ids = [r["id"] for r in rows]
    assert B32 in ids and "openclip-vit-l14-ta8" in ids and "fusionbench-gpt2-glue" in ids
    b32 = rows[ids.index(B32)]
    assert b32["matched"] == 16 and b32["model"] == "openai/clip-vit-base-patch32" and len(b32["tasks"]) == 8
    table = fb_cli("agree", "--list")
    assert table.exit_code == 0 and B32 in table.stdout and "16 matched" in table.stdout


def test_store_leaderboard_as_fb_table_selects_it(fb_cli, store_path):
    out = fb_cli("agree", "--suite", "toy", "--store", str(store_path), "--against", B32, "--json")
    assert out.exit_code == 0, out.stderr
    result = out.json
    rows = {r["method"]: r for r in result["methods"]}
    # validation picks λ = 0.3: test 60 %; ranks regmean 75 > ties 70 > TA 60 > average 55 as published
    assert rows["task_arithmetic"]["ours"] == pytest.approx(60.0)
    assert rows["task_arithmetic"]["gap_share_ours"] == pytest.approx((60 - 40) / (95 - 40))
    assert result["references"]["ours"] == {"pretrained": pytest.approx(40.0), "individual": pytest.approx(95.0)}
    assert result["agreement"]["all"]["spearman"]["estimate"] == pytest.approx(1.0)
    assert result["agreement"]["all"]["kendall"]["estimate"] == pytest.approx(1.0)
    assert result["unmatched"]["ours"] == ["my_method"]
    # the oracle picks λ = 0.7 (90 %): TA ranks first; Σd² = 1 + 1 + 4 + 0 = 6 → ρ = 1 − 36/60
    oracle = fb_cli("agree", "--suite", "toy", "--store", str(store_path), "--against", B32, "--json",
                    "--select-on", "test").json
    assert oracle["agreement"]["all"]["spearman"]["estimate"] == pytest.approx(0.4)


def test_select_on_none_needs_one_setting_per_method(fb_cli, store_path, tmp_path):
    out = fb_cli("agree", "--suite", "toy", "--store", str(store_path), "--against", B32, "--select-on", "none")
    one_error_line(out, "task_arithmetic", "2 hyperparameter settings")
    single = make_store(tmp_path / "single.sqlite3", second_setting=False)
    out = fb_cli("agree", "--suite", "toy", "--store", str(single), "--against", B32, "--select-on", "none",
                 "--json")
    assert out.exit_code == 0, out.stderr
    assert {r["method"]: r["ours"] for r in out.json["methods"]}["task_arithmetic"] == pytest.approx(60.0)


def test_table_output_and_held_out_groups(fb_cli, store_path):
    out = fb_cli("agree", "--suite", "toy", "--store", str(store_path), "--against", B32,
                 "--held-out", "ties,regmean", "--held-out", "simple_average")
    assert out.exit_code == 0, out.stderr
    for text in ("gap share ours", "rank published", "calibration", "held out", "regmean *", "2000 resamples",
                 "my_method"):
        assert text in out.stdout, text
    result = fb_cli("agree", "--suite", "toy", "--store", str(store_path), "--against", B32, "--json",
                    "--held-out", "ties,regmean,simple_average").json
    assert sorted(result["agreement"]["held_out"]["methods"]) == ["regmean", "simple_average", "ties"]
    assert result["agreement"]["calibration"]["methods"] == ["task_arithmetic"]


def test_from_json_and_output_file(fb_cli, tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"task_arithmetic": 38.6, "ties": 40.8, "regmean": 41.4, "wemoe": 14.6,
                                "_pretrained_": 36.1, "_individual_": 64.6}))
    target = tmp_path / "out" / "agreement.md"
    out = fb_cli("agree", "--from-json", str(mine), "--against", B32, "-o", str(target))
    assert out.exit_code == 0, out.stderr
    text = target.read_text()
    assert "| task_arithmetic | Task Arithmetic (λ=.3) | 38.60 | 68.00 | 0.09 | 0.47 | 3 | 4 |" in text
    assert sorted(p.name for p in target.parent.iterdir()) == ["agreement.md"]  # no temporary file left
    # an existing file is never replaced without --overwrite
    target.write_text("not fb's")
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--against", B32, "-o", str(target)),
                   "exists", "--overwrite")
    assert target.read_text() == "not fb's"
    out = fb_cli("agree", "--from-json", str(mine), "--against", B32, "-o", str(target), "--overwrite", "--json")
    assert out.exit_code == 0 and json.loads(target.read_text()) == out.json


def test_errors_are_one_line(fb_cli, tmp_path, store_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"ties": 40.8, "regmean": 41.4, "other": 1.0}))
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--against", "fusionbench-clip-vit-b32"),
                   "unknown published leaderboard", "Did you mean: fusionbench-clip-vit-b32-ta8")
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--against", B32), "only 2 method(s) shared")
    one_error_line(fb_cli("agree", "--suite", "nothing", "--store", str(store_path), "--against", B32),
                   "holds no runs of suite 'nothing'")
    one_error_line(fb_cli("agree", "--from-json", str(mine)), "--against ID is required")
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--suite", "toy", "--against", B32), "either --suite")
    mine.write_text('{"ties": "high"}')
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--against", B32), "key 'ties'", str(mine))
    mine.write_text("{not json")
    one_error_line(fb_cli("agree", "--from-json", str(mine), "--against", B32), "cannot read JSON file")


def test_agree_never_imports_torch(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"task_arithmetic": 1.0, "ties": 2.0, "regmean": 3.0}))
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from fusionbench_core.cli import cli
        for args in (["agree", "--list"], ["agree", "--list", "--json"],
                     ["agree", "--from-json", r"{mine}", "--against", "{B32}"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        assert 'torch' not in sys.modules, 'fb agree imported torch'
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
