"""A hub suite's runs are keyed on the bytes of its checkpoints: other weights under the same hub ids
are a new run, the same weights copied elsewhere are the same run (#24)."""

from __future__ import annotations

import os
import shutil

ARGS = ("run", "-m", "task_arithmetic", "-p", "gpt2-glue", "-s", "modelpool.tasks=cola,rte",
        "-s", "taskpool.tasks=cola,rte", "-s", "taskpool.max_examples=8")


def test_other_weights_under_the_same_hub_ids_are_a_new_run(nlp_env, fb_cli, tmp_path, monkeypatch):
    from fusionbench_nlp.suites import SUITES

    models = tmp_path / "models"
    shutil.copytree(nlp_env.model_root, models)  # the session's hub stays as it is
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(models))
    db = str(tmp_path / "r.sqlite3")

    def run(tag):
        out = fb_cli(*ARGS, "--store", db, "-o", str(tmp_path / tag), "--json")
        assert out.exit_code == 0, out.stderr
        return out

    first = run("1")
    assert "already" not in first.stderr
    assert "already" in run("2").stderr  # same configuration, same bytes: reused

    # The same bytes elsewhere, with other modification times: still the same run.
    moved = tmp_path / "moved"
    shutil.copytree(models, moved)
    for path in moved.rglob("*.safetensors"):
        os.utime(path, (1, 1))
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(moved))
    assert "already" in run("3").stderr

    # Other weights under the same hub id (e.g. random stand-ins replaced by the real checkpoint).
    expert = moved / SUITES["gpt2-glue"].expert_id("cola")
    from transformers import GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification.from_pretrained(str(expert))
    import torch

    with torch.no_grad():
        for param in model.transformer.parameters():
            param.add_(0.05)
    model.save_pretrained(str(expert))
    changed = run("4")
    assert "already" not in changed.stderr
    listed = fb_cli("results", "--store", db, "--json").json
    assert len(listed) == 2
    shown = [fb_cli("results", "show", str(r["id"]), "--store", db, "--json").json for r in listed]
    inputs = [s["report"]["cell"]["inputs"] for s in shown]
    assert inputs[0]["modelpool"] != inputs[1]["modelpool"] and inputs[0]["taskpool"] != inputs[1]["taskpool"]
    assert all(len(i["modelpool"]) == 64 for i in inputs)
