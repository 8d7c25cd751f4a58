"""Where the NLP suites follow upstream FusionBench's protocol (v0.2.33), on the tiny hub in upstream's layout."""

from __future__ import annotations

import pytest
import torch

from fusionbench_core.errors import ConfigError
from fusionbench_nlp import runtime
from fusionbench_nlp.flan_t5_glue import FlanT5GlueTaskPool
from fusionbench_nlp.gpt2_glue import GPT2GlueTaskPool


@pytest.fixture
def autocasts(monkeypatch):
    """Every ``torch.autocast`` entered, as (device type, dtype)."""
    seen: list[tuple[str, torch.dtype]] = []
    real = torch.autocast

    def record(device_type, dtype=None, **kwargs):
        seen.append((device_type, dtype))
        return real("cpu", enabled=False)

    monkeypatch.setattr(torch, "autocast", record)
    return seen


def test_evaluation_is_fp32_on_cuda_unless_bf16_is_asked_for(autocasts):
    cuda = torch.device("cuda")
    with runtime.inference(cuda):
        pass
    with runtime.inference(cuda, "fp32"):
        pass
    assert autocasts == []  # upstream evaluates in fp32 on every device
    with runtime.inference(cuda, "bf16"):
        pass
    with runtime.inference(torch.device("cpu"), "bf16"):
        pass
    assert autocasts == [("cuda", torch.bfloat16)]


@pytest.mark.parametrize("pool_class", [GPT2GlueTaskPool, FlanT5GlueTaskPool])
def test_task_pools_default_to_fp32_and_refuse_other_precisions(pool_class):
    assert pool_class(device="cpu").precision == "fp32"
    assert {o.name: o.default for o in pool_class.options}["precision"] == "fp32"
    assert pool_class(device="cpu", precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        pool_class(device="cpu", precision="fp16")


def test_flan_t5_pools_hand_out_prompt_batches_and_label_word_logits(nlp_env):
    from fusionbench_core.protocols import PRETRAINED, DataModelPool, DataRequest
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool
    from fusionbench_nlp.prompts import GLUE_PROMPTS

    pool = FlanT5GlueModelPool("flan-t5-base-glue-lora16", max_examples=5)
    assert isinstance(pool, DataModelPool)
    taskpool = FlanT5GlueTaskPool("flan-t5-base-glue-lora16", tasks=["mnli"], device="cpu")
    evaluation = taskpool.tokenizer  # same tokenizer, so the same prompt ids
    unlabelled = list(pool.batches("mnli", DataRequest(split="test", examples=None, labelled=False), batch_size=2))
    assert [b[0]["input_ids"].shape[0] for b in unlabelled] == [2, 2, 1] and all(y is None for _, y in unlabelled)
    inputs, labels = next(pool.batches("mnli", DataRequest(split="train", examples=3), batch_size=8))
    assert labels.tolist() and len(labels) == 3 and set(labels.tolist()) <= {0, 1, 2}

    model = pool.load_model("mnli")
    logits = pool.logits("mnli", model, inputs)
    assert logits.shape == (3, 3) and pool.forward_passes == 1
    # By hand: one decoder step from the start token; the scores of each label word's first token.
    words = [evaluation(w, add_special_tokens=False)["input_ids"][0] for w in GLUE_PROMPTS["mnli"].targets]
    with torch.no_grad():
        start = torch.full((3, 1), model.config.decoder_start_token_id)
        full = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     decoder_input_ids=start).logits[:, 0]
        torch.testing.assert_close(logits, full[:, words])
    with pytest.raises(ConfigError, match="regression"):
        pool.logits("stsb", pool.load_model(PRETRAINED), inputs)


@pytest.mark.parametrize(("method", "suite"), [("fisher_merging", "flan-t5-base-glue"),
                                               ("regmean", "flan-t5-large-glue-lora16")])
def test_a_data_method_runs_on_a_flan_t5_pool(nlp_env, fb_cli, tmp_path, monkeypatch, method, suite):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    result = fb_cli("run", "-m", method, "-p", suite, "-s", "examples=4",
                    "-s", "modelpool.tasks=cola,rte", "-s", "taskpool.tasks=cola,rte",
                    "-s", "taskpool.max_examples=4", "-o", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    assert list(result.json["tasks"]) == ["cola", "rte"]
    assert result.json["cost"]["forward_passes"] >= 8
