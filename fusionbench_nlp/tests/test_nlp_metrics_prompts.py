"""Metrics against hand-computed values, the prompt facts, and listing without torch."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from fusionbench_nlp.glue import GLUE_TASKS, split_for
from fusionbench_nlp.metrics import average_ranks, exact_match_accuracy, parse_score, spearman_rho
from fusionbench_nlp.prompts import GLUE_PROMPTS
from fusionbench_nlp.suites import FLAN_T5_TASKS, GPT2_TASKS, SUITES


def test_average_ranks_share_the_mean_rank_of_ties():
    assert average_ranks([10, 20, 20, 30, 20]) == [1, 3, 3, 5, 3]
    assert average_ranks([2.0, 1.0]) == [2, 1]


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.8),  # 1 - 6·Σd²/(n(n²-1)) = 1 - 24/120
        ([1, 2, 2, 3], [10, 20, 30, 40], math.sqrt(0.9)),  # ranks (1, 2.5, 2.5, 4): 4.5 / sqrt(4.5·5)
        ([3, 1, 2], [1, 3, 2], -1.0),
        ([1, 1, 2, 2], [1, 2, 1, 2], 0.0),
        ([1, 2, 3], [5, 5, 5], 0.0),  # undefined (constant side): reported as 0, not NaN
    ],
)
def test_spearman_against_hand_computed_values(x, y, expected):
    assert spearman_rho(x, y) == pytest.approx(expected, abs=1e-12)


def test_spearman_matches_scipy_on_tied_data():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    x = [rng.randint(0, 5) / 1.0 for _ in range(200)]
    y = [xi + rng.choice([-1, 0, 0, 1]) for xi in x]
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_exact_match_and_score_parsing():
    assert exact_match_accuracy(["yes", "no ", "maybe", "no"], ["yes", "no", "no", "yes"]) == 0.5
    with pytest.raises(ValueError):
        exact_match_accuracy(["yes"], [])
    assert parse_score(" 3.8") == 3.8
    assert parse_score("three") == 0.0
    assert parse_score("nan") == 0.0


def test_prompts_render_the_upstream_wording_and_label_words():
    text, target = GLUE_PROMPTS["cola"].render({"sentence": "He run.", "label": 0})
    assert text == ("Indicate if the following sentence is grammatically correct or not: \"He run.\". "
                    "Answere 'acceptable' or 'unacceptable'.")
    assert target == "unacceptable"
    text, target = GLUE_PROMPTS["mnli"].render({"premise": "P", "hypothesis": "H", "label": 2})
    assert text.startswith("Does the premise: 'P' logically imply") and "hypothesis: 'H'?" in text
    assert target == "contradiction"
    assert GLUE_PROMPTS["qnli"].render({"question": "Q", "sentence": "S", "label": 0}) == (
        "Given the context: 'S', does the question 'Q' have an answer based on the information provided? "
        "Answer with 'yes' or 'no'.", "yes")
    assert GLUE_PROMPTS["stsb"].render({"sentence1": "a", "sentence2": "b", "label": 3.75})[1] == "3.8"
    assert GLUE_PROMPTS["sst2"].render({"sentence": "x", "label": -1})[1] == ""  # hidden test label
    for task in FLAN_T5_TASKS:  # every template uses exactly its task's GLUE columns
        row = {column: "w" for column in GLUE_TASKS[task].text_columns} | {"label": 0}
        GLUE_PROMPTS[task].render(row)
        assert len(GLUE_PROMPTS[task].targets) == len(GLUE_TASKS[task].label_names)


def test_suite_ids_and_splits():
    assert SUITES["gpt2-glue"].hub_ids["mnli"] == "tanganke/gpt2_mnli"
    assert SUITES["flan-t5-large-glue-lora16"].expert_id("stsb") == "tanganke/flan-t5-large_glue-stsb_lora-16"
    assert SUITES["flan-t5-base-glue"].hub_ids["_pretrained_"] == "google/flan-t5-base"
    assert set(GPT2_TASKS) < set(FLAN_T5_TASKS)
    assert split_for("mnli", "test") == "validation_matched" and split_for("mnli", "train") == "train"


def test_registration_imports_no_torch():
    code = (
        "import sys, json\n"
        "from fusionbench_nlp import plugin\n"
        "rows = []\n"
        "plugin.register_modelpools(lambda name, target, **meta: rows.append([name, target, meta]))\n"
        "plugin.register_taskpools(lambda name, target, **meta: rows.append([name, target, meta]))\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "print(json.dumps({'rows': rows, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert sorted({row[0] for row in result["rows"]}) == sorted(SUITES)
    assert all(isinstance(row[1], str) and row[1].startswith("fusionbench_nlp.") for row in result["rows"])


def test_fb_lists_the_suites_with_tasks_and_ids(fb_cli):
    for kind in ("modelpools", "taskpools"):
        result = fb_cli(kind, "--json")
        assert result.exit_code == 0, result.stderr
        rows = {row["name"]: row for row in result.json}
        for name, suite in SUITES.items():
            assert rows[name]["tasks"] == list(suite.tasks)
            assert rows[name]["hub_ids"]["_pretrained_"] == suite.pretrained
            assert rows[name]["hub_ids"]["rte"] == suite.expert_id("rte")
            assert rows[name]["plugin"] == "nlp_glue"


def test_show_describes_hub_ids_and_datasets(fb_cli):
    result = fb_cli("modelpools", "show", "flan-t5-base-glue-lora16", "--json")
    assert result.exit_code == 0, result.stderr
    details = result.json
    assert details["hub_ids"]["cola"] == "tanganke/flan-t5-base_glue-cola_lora-16"
    assert details["datasets"]["mnli"] == "glue/mnli, split validation_matched"
    assert "LoRA" in details["experts"]
    assert [o["name"] for o in details["options"]] == ["tasks", "max_examples"]


def test_each_family_is_one_pool_class_that_looks_its_suite_up_by_name(fb_cli):
    from fusionbench_core.errors import UnknownComponentError
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool, FlanT5GlueTaskPool
    from fusionbench_nlp.gpt2_glue import GPT2GlueModelPool

    result = fb_cli("modelpools", "--json")
    targets = {row["name"]: row["target"] for row in result.json if row["name"] in SUITES}
    assert targets == {"gpt2-glue": "fusionbench_nlp.gpt2_glue:GPT2GlueModelPool",
                       **{name: "fusionbench_nlp.flan_t5_glue:FlanT5GlueModelPool"
                          for name in SUITES if name.startswith("flan-t5")}}
    large = FlanT5GlueModelPool("flan-t5-large-glue-lora16")
    assert large.suite is SUITES["flan-t5-large-glue-lora16"] and large.checkpoints.suite.pretrained == "google/flan-t5-large"
    assert FlanT5GlueTaskPool("flan-t5-base-glue-lora16", device="cpu").suite.lora
    with pytest.raises(UnknownComponentError, match="flan-t5-base-glue"):
        FlanT5GlueModelPool("gpt2-glue")
    with pytest.raises(UnknownComponentError, match="gpt2-glue"):
        GPT2GlueModelPool("flan-t5-base-glue")
