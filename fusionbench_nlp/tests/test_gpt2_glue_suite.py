"""GPT-2 GLUE suite on the tiny hub: key mapping, head-on-backbone evaluation, merges, CLI runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import PRETRAINED, DataRequest
from fusionbench_nlp.glue import GLUE_TASKS
from fusionbench_nlp.gpt2_glue import GPT2GlueModelPool, GPT2GlueTaskPool
from fusionbench_nlp.suites import GPT2_TASKS


def _raw(hub, hub_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(hub.model_root / hub_id / "model.safetensors"))


def test_backbones_of_base_and_experts_share_canonical_keys(nlp_env):
    pool = GPT2GlueModelPool()
    base, expert = pool.tensors(PRETRAINED), pool.tensors("cola")
    assert base.keys() == expert.keys()
    assert "score.weight" not in expert.keys() and "wte.weight" in expert.keys()
    raw = _raw(nlp_env, "tanganke/gpt2_cola")
    assert torch.equal(expert.get("h.1.mlp.c_fc.weight"), raw["transformer.h.1.mlp.c_fc.weight"])
    assert torch.equal(base.get("wte.weight"), _raw(nlp_env, "gpt2")["wte.weight"])


def _hf_scores(hub, task: str) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of the expert's own GPT2ForSequenceClassification, one unpadded example
    at a time (an independent path)."""
    import datasets
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    facts = GLUE_TASKS[task]
    rows = datasets.Dataset.from_parquet(str(hub.data_root / "glue" / facts.config / f"{facts.eval_split}.parquet"))
    model = GPT2ForSequenceClassification.from_pretrained(str(hub.model_root / f"tanganke/gpt2_{task}")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(hub.model_root / "gpt2"))
    correct, loss = 0, 0.0
    with torch.no_grad():
        for row in rows:
            encoded = tokenizer(*[row[c] for c in facts.text_columns], return_tensors="pt")
            logits = model(**encoded).logits
            correct += int(logits.argmax(-1).item() == row["label"])
            loss += torch.nn.functional.cross_entropy(logits, torch.tensor([row["label"]])).item()
    return correct / len(rows), loss / len(rows)


@pytest.mark.parametrize("task", ["mnli", "sst2"])
def test_expert_on_its_own_head_scores_as_the_hf_classifier(nlp_env, task):
    pool = GPT2GlueModelPool()
    backbone = pool.load_model(task)
    batched = GPT2GlueTaskPool(tasks=[task], batch_size=4, device="cpu").evaluate(backbone)
    single = GPT2GlueTaskPool(tasks=[task], batch_size=1, device="cpu").evaluate(backbone)
    assert batched.tasks[task]["accuracy"] == single.tasks[task]["accuracy"]
    assert batched.tasks[task]["loss"] == pytest.approx(single.tasks[task]["loss"], rel=1e-5)
    accuracy, loss = _hf_scores(nlp_env, task)
    assert batched.tasks[task]["accuracy"] == pytest.approx(accuracy)
    assert batched.tasks[task]["loss"] == pytest.approx(loss, rel=1e-5)  # upstream reports the loss too


def test_task_arithmetic_merges_the_backbones_by_hand(nlp_env):
    from fusionbench_methods.task_arithmetic import TaskArithmetic

    pool = GPT2GlueModelPool(tasks=["cola", "rte", "qqp"])
    fused = TaskArithmetic(scaling_factor=0.3).run(pool)
    base = _raw(nlp_env, "gpt2")
    experts = [_raw(nlp_env, f"tanganke/gpt2_{t}") for t in ("cola", "rte", "qqp")]
    for key in ("h.0.attn.c_attn.weight", "ln_f.bias", "wpe.weight"):
        expected = base[key] + 0.3 * sum(e[f"transformer.{key}"] - base[key] for e in experts)
        assert torch.allclose(fused.state_dict()[key], expected, atol=1e-6)


def test_data_pool_batches_and_logits(nlp_env):
    pool = GPT2GlueModelPool(max_examples=5)
    batches = list(pool.batches("mnli", DataRequest(split="test", examples=None, labelled=False), batch_size=2))
    assert [b[0]["input_ids"].shape[0] for b in batches] == [2, 2, 1]  # capped at max_examples=5
    assert all(labels is None for _, labels in batches)
    inputs, labels = next(pool.batches("cola", DataRequest(split="train", examples=3), batch_size=8))
    assert labels.tolist() and len(labels) == 3
    logits = pool.logits("cola", pool.load_model("cola"), inputs)
    assert logits.shape == (3, len(GLUE_TASKS["cola"].label_names))
    assert pool.forward_passes == 1


class PickMember:
    """A Predictor that answers with one member's head logits (routing check for task_logits)."""

    def __init__(self, member):
        self.member = member
        self.calls = 0

    def predict_logits(self, logits_of, inputs):
        self.calls += 1
        return logits_of(self.member, inputs)


def test_predictors_are_scored_through_their_members(nlp_env):
    pool = GPT2GlueModelPool()
    taskpool = GPT2GlueTaskPool(tasks=["qnli", "cola"], batch_size=4, device="cpu")
    expert = pool.load_model("qnli")
    predictor = PickMember(expert)
    assert taskpool.evaluate(predictor).tasks == taskpool.evaluate(expert).tasks
    assert predictor.calls == 6  # 10 rows per task in batches of 4, two tasks


def test_run_then_eval_of_the_saved_model_agree(nlp_env, fb_cli, tmp_path):
    out = tmp_path / "run"
    result = fb_cli("run", "-m", "task_arithmetic", "-p", "gpt2-glue", "-t", "gpt2-glue", "-o", str(out),
                    "--save-model", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert list(report["tasks"]) == list(GPT2_TASKS)
    from fusionbench_methods.task_arithmetic import TaskArithmetic

    in_memory = GPT2GlueTaskPool(device="cpu").evaluate(TaskArithmetic().run(GPT2GlueModelPool()))
    assert {t: m["accuracy"] for t, m in report["tasks"].items()} == {t: m["accuracy"] for t, m in in_memory.tasks.items()}
    assert [m["loss"] for m in report["tasks"].values()] == pytest.approx([m["loss"] for m in in_memory.tasks.values()])
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    again = fb_cli("eval", str(out / "model"), "-p", "gpt2-glue", "--json")
    assert again.exit_code == 0, again.stderr
    assert next(iter(again.json.values()))["tasks"] == report["tasks"]


def test_zero_lambda_task_arithmetic_scores_as_the_pretrained_model(nlp_env, fb_cli, tmp_path):
    merged = fb_cli("run", "-m", "task_arithmetic", "-p", "gpt2-glue", "-s", "scaling_factor=0",
                    "-s", "taskpool.tasks=cola,rte", "-s", "taskpool.max_examples=6", "-o", str(tmp_path), "--json")
    assert merged.exit_code == 0, merged.stderr
    assert list(merged.json["tasks"]) == ["cola", "rte"]
    pretrained = fb_cli("eval", "-p", "gpt2-glue", "--model", "_pretrained_", "-s", "taskpool.tasks=cola,rte",
                        "-s", "taskpool.max_examples=6", "--json")
    assert pretrained.exit_code == 0, pretrained.stderr
    assert merged.json["tasks"] == pretrained.json["_pretrained_"]["tasks"]


def test_bad_task_option_is_one_line_error(nlp_env, fb_cli):
    result = fb_cli("run", "-p", "gpt2-glue", "-s", "taskpool.tasks=cola,colaa", "--json")
    assert result.exit_code == 1
    assert "colaa" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="colaa"):
        GPT2GlueModelPool(tasks=["colaa"])


def test_missing_model_offline_names_the_model(nlp_env, fb_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(tmp_path))
    result = fb_cli("eval", "-p", "gpt2-glue", "--model", "_pretrained_", "--json")
    assert result.exit_code == 1
    assert "'gpt2'" in result.stderr and "FUSIONBENCH_MODEL_ROOT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # a failed lookup writes nothing into the model root


@pytest.mark.parametrize("method", ["regmean", "regmean_plusplus"])
def test_regmean_merges_the_conv1d_layers_of_gpt2(nlp_env, fb_cli, tmp_path, monkeypatch, method):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    result = fb_cli("run", "-m", method, "-p", "gpt2-glue", "-s", "examples=8", "-s", "taskpool.tasks=cola,rte",
                    "-s", "taskpool.max_examples=6", "-o", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    assert list(result.json["tasks"]) == ["cola", "rte"]
    cost = result.json["cost"]
    assert cost["forward_passes"] >= 8 * len(GPT2_TASKS)
    if method == "regmean":  # 2 blocks × (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), all Conv1D
        assert cost["linear_layers"] == 8
    else:
        assert cost["layer_groups"] == 2
