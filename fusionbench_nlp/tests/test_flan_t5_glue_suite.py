"""Flan-T5 GLUE suites on the tiny hub: scoring, batched generation, the tokenised cache, CLI runs."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fusionbench_core.errors import ConfigError, ModelLoadError
from fusionbench_core.protocols import PRETRAINED
from fusionbench_nlp import tokenized
from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool, FlanT5GlueTaskPool
from fusionbench_nlp.suites import FLAN_T5_TASKS


class ScriptedModel(nn.Module):
    """A stand-in for T5 whose generate() answers each prompt with a scripted text."""

    def __init__(self, tokenizer, answers: dict[tuple[int, ...], str]):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.answers = answers
        self.config = type("Config", (), {"decoder_start_token_id": tokenizer.pad_token_id})()
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask=None, max_length=None, **kwargs):
        self.calls.append({"shape": tuple(input_ids.shape), "mask": attention_mask is not None,
                           "max_length": max_length, "start": kwargs.get("decoder_start_token_id")})
        pad = self.tokenizer.pad_token_id
        rows = []
        for i, row in enumerate(input_ids.tolist()):
            length = int(attention_mask[i].sum()) if attention_mask is not None else len(row)
            ids = tuple(row[:length])
            if attention_mask is None:
                ids = tuple(t for t in row if t != pad)
            rows.append([pad] + self.tokenizer(self.answers[ids])["input_ids"])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def _encoded(taskpool: FlanT5GlueTaskPool, task: str):
    from fusionbench_nlp.glue import GLUE_TASKS

    return tokenized.load_encoded("prompts", task, GLUE_TASKS[task].eval_split, taskpool.tokenizer, taskpool.max_length)


def test_exact_match_and_spearman_of_scripted_answers(nlp_env):
    taskpool = FlanT5GlueTaskPool(tasks=["cola", "stsb"], batch_size=3, device="cpu")
    cola, stsb = _encoded(taskpool, "cola"), _encoded(taskpool, "stsb")
    assert len({tuple(ids) for ids in cola.input_ids + stsb.input_ids}) == len(cola) + len(stsb)
    answers = {}
    for i, (ids, target) in enumerate(zip(cola.input_ids, cola.targets)):
        wrong = "acceptable" if target == "unacceptable" else "unacceptable"
        answers[tuple(ids)] = target if i % 2 == 0 else wrong  # half right
    for ids, target in zip(stsb.input_ids, stsb.targets):
        answers[tuple(ids)] = target
    model = ScriptedModel(taskpool.tokenizer, answers)
    report = taskpool.evaluate(model)
    assert report.tasks["cola"] == {"accuracy": 0.5, "glue_score": 0.5}
    assert report.tasks["stsb"]["spearman_rho"] == pytest.approx(1.0)
    assert report.average["glue_score"] == pytest.approx(0.75)
    assert all(call["mask"] and call["max_length"] == 10 and call["start"] == 0 for call in model.calls)
    assert [c["shape"][0] for c in model.calls[:4]] == [3, 3, 3, 1]  # 10 rows in batches of 3

    for ids in stsb.input_ids:  # every score the same: no rank information, ρ reported as 0
        answers[tuple(ids)] = "2.5"
    assert taskpool.evaluate(model).tasks["stsb"]["spearman_rho"] == 0.0


def test_a_model_without_generate_is_refused(nlp_env):
    taskpool = FlanT5GlueTaskPool(tasks=["rte"], device="cpu")
    with pytest.raises(ConfigError, match="no generate"):
        taskpool.evaluate(nn.Linear(2, 2))


def test_upstream_padding_pads_to_max_length_with_the_mask_transformers_4_inferred(nlp_env):
    taskpool = FlanT5GlueTaskPool(tasks=["rte"], batch_size=4, device="cpu", upstream_padding=True)
    rte = _encoded(taskpool, "rte")
    model = ScriptedModel(taskpool.tokenizer, {tuple(ids): t for ids, t in zip(rte.input_ids, rte.targets)})
    assert taskpool.evaluate(model).tasks["rte"]["accuracy"] == 1.0
    assert {c["shape"][1] for c in model.calls} == {taskpool.tokenizer.model_max_length}
    assert all(c["mask"] for c in model.calls)


def test_upstream_padding_generates_what_per_batch_padding_does(nlp_env):
    """Upstream ran transformers 4, whose generate() masked the pads: its padding to 512 changes nothing."""
    model = FlanT5GlueModelPool().load_model("rte")
    padded = FlanT5GlueTaskPool(tasks=["rte"], batch_size=4, device="cpu", upstream_padding=True)
    default = FlanT5GlueTaskPool(tasks=["rte"], batch_size=4, device="cpu")
    rows = _encoded(default, "rte").input_ids
    texts = default.generate(model, rows)
    assert any(texts) and padded.generate(model, rows) == texts


def test_batched_generation_equals_one_by_one(nlp_env):
    pool = FlanT5GlueModelPool()
    model = pool.load_model("mrpc")
    one = FlanT5GlueTaskPool(tasks=["mrpc"], batch_size=1, device="cpu")
    many = FlanT5GlueTaskPool(tasks=["mrpc"], batch_size=4, device="cpu")
    rows = _encoded(one, "mrpc").input_ids
    assert len({len(r) for r in rows}) > 1  # the batches really are padded
    texts = many.generate(model, rows)
    assert texts == one.generate(model, rows)
    assert any(texts)  # the tiny model generates words, not just </s>


def test_full_experts_are_read_under_canonical_names(nlp_env):
    pool = FlanT5GlueModelPool()
    base, expert = pool.tensors(PRETRAINED), pool.tensors("qnli")
    assert base.keys() == expert.keys()
    assert "shared.weight" in base.keys() and "encoder.embed_tokens.weight" not in base.keys()
    raw = load_file(str(nlp_env.model_root / "tanganke/flan-t5-base_glue-qnli/model.safetensors"))
    key = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    assert torch.equal(expert.get(key), raw[key])


@pytest.mark.parametrize(("suite_name", "own_lm_head"), [("flan-t5-base-glue", False),
                                                         ("flan-t5-large-glue-lora16", True)])
def test_pretrained_is_built_as_transformers_loads_it(nlp_env, suite_name, own_lm_head):
    from transformers import T5ForConditionalGeneration

    pool = FlanT5GlueModelPool(suite_name)
    ours = pool.load_model(PRETRAINED)
    reference = T5ForConditionalGeneration.from_pretrained(str(nlp_env.model_root / pool.suite.pretrained)).eval()
    assert ("lm_head.weight" in pool.tensors(PRETRAINED).keys()) is own_lm_head
    assert (ours.lm_head.weight is ours.shared.weight) is (reference.lm_head.weight is reference.shared.weight)
    assert (ours.lm_head.weight is ours.shared.weight) is not own_lm_head
    assert ours.encoder.embed_tokens.weight is ours.shared.weight
    inputs = torch.tensor([[5, 9, 13, 1], [7, 8, 1, 0]])
    with torch.no_grad():
        args = {"input_ids": inputs, "attention_mask": (inputs != 0).long(), "decoder_input_ids": inputs[:, :3]}
        assert torch.allclose(ours(**args).logits, reference(**args).logits, atol=1e-5)


def test_tokenised_sets_come_from_the_cache(nlp_env, monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path))
    taskpool = FlanT5GlueTaskPool(tasks=["qqp"], device="cpu")
    first = _encoded(taskpool, "qqp")
    assert first.targets and all(t in ("yes", "no") for t in first.targets)
    entries = list((tmp_path / "nlp" / "tokenized").iterdir())
    assert [e.name.split("-")[:3] for e in entries] == [["prompts", "qqp", "validation"]]

    def no_raw_reads(*args):
        raise AssertionError("raw GLUE read although the cache holds the split")

    monkeypatch.setattr(tokenized, "load_split", no_raw_reads)
    again = _encoded(taskpool, "qqp")
    assert again.input_ids == first.input_ids and again.targets == first.targets

    shard = next((nlp_env.data_root / "glue" / "qqp").glob("validation-*.parquet"))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(AssertionError, match="raw GLUE read"):
            _encoded(taskpool, "qqp")  # the data changed: a new cache entry is needed
    finally:
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_missing_split_names_the_expected_files(nlp_env, monkeypatch, tmp_path):
    (tmp_path / "glue" / "cola").mkdir(parents=True)
    monkeypatch.setenv("FUSIONBENCH_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    taskpool = FlanT5GlueTaskPool(tasks=["cola"], device="cpu")
    with pytest.raises(ModelLoadError, match=r"validation\.parquet"):
        _encoded(taskpool, "cola")


@pytest.mark.parametrize("suite", ["flan-t5-base-glue", "flan-t5-base-glue-lora16", "flan-t5-large-glue-lora16"])
def test_fb_run_end_to_end(nlp_env, fb_cli, tmp_path, suite):
    result = fb_cli("run", "-m", "task_arithmetic", "-p", suite, "-o", str(tmp_path), "-s", "taskpool.batch_size=8",
                    "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert list(report["tasks"]) == list(FLAN_T5_TASKS)
    assert set(report["tasks"]["stsb"]) == {"spearman_rho", "glue_score"}
    assert all(set(report["tasks"][t]) == {"accuracy", "glue_score"} for t in FLAN_T5_TASKS if t != "stsb")
    assert report["average"]["glue_score"] == pytest.approx(
        sum(m["glue_score"] for m in report["tasks"].values()) / len(FLAN_T5_TASKS))
