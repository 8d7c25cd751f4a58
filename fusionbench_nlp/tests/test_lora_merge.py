"""LoRA-16 suites: a task-arithmetic merge of adapters equals merging the dense ΔW = scale·B·A by hand."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fusionbench_core.errors import ModelLoadError
from fusionbench_core.protocols import PRETRAINED
from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool

TASKS = ["cola", "mnli", "stsb"]
PREFIX = "base_model.model."


def dense_deltas(adapter_dir) -> dict[str, torch.Tensor]:
    """ΔW = (lora_alpha / r)·B·A per base tensor, straight from the adapter files."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    deltas = {}
    for name, a in tensors.items():
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[len(PREFIX):-len(".lora_A.weight")]
        b = tensors[f"{PREFIX}{module}.lora_B.weight"]
        assert a.shape[0] == config["r"] and b.shape[1] == config["r"]
        deltas[f"{module}.weight"] = (config["lora_alpha"] / config["r"]) * (b.double() @ a.double())
    return deltas


@pytest.mark.parametrize("suite_name", ["flan-t5-base-glue-lora16", "flan-t5-large-glue-lora16"])
def test_task_arithmetic_of_adapters_equals_dense_delta_merge(nlp_env, suite_name):
    from fusionbench_methods.task_arithmetic import TaskArithmetic

    pool = FlanT5GlueModelPool(suite_name, tasks=TASKS)
    suite = pool.suite
    fused = TaskArithmetic(scaling_factor=0.3).run(pool).state_dict()
    base = load_file(str(nlp_env.model_root / suite.pretrained / "model.safetensors"))
    total: dict[str, torch.Tensor] = {}
    for task in TASKS:
        for key, delta in dense_deltas(nlp_env.model_root / suite.expert_id(task)).items():
            total[key] = total.get(key, 0) + delta
    assert total and all(".SelfAttention.q." in k or ".SelfAttention.v." in k or "EncDecAttention" in k for k in total)
    for key, tensor in base.items():
        expected = tensor.double() + 0.3 * total[key] if key in total else tensor.double()
        assert torch.allclose(fused[key].double(), expected, atol=1e-6), key
    changed = [k for k in total if not torch.allclose(fused[k], base[k], atol=1e-4)]
    assert len(changed) == len(total)  # every adapted tensor really moved


def test_peft_merge_and_unload_agrees_with_the_per_tensor_source(nlp_env):
    pool = FlanT5GlueModelPool("flan-t5-base-glue-lora16", tasks=["rte"])
    via_peft = pool.load_model("rte").state_dict()  # peft's merge_and_unload, as upstream loads them
    source = pool.tensors("rte")
    assert source.keys() == pool.tensors(PRETRAINED).keys()
    for key in source.keys():
        assert torch.allclose(source.get(key).float(), via_peft[key].float(), atol=1e-6), key
    deltas = dense_deltas(nlp_env.model_root / pool.suite.expert_id("rte"))
    base = pool.tensors(PRETRAINED)
    key = next(iter(deltas))
    assert torch.allclose(via_peft[key].double(), base.get(key).double() + deltas[key], atol=1e-6)


def test_a_full_checkpoint_where_an_adapter_belongs_is_refused(nlp_env, monkeypatch, tmp_path):
    fake = tmp_path / "tanganke" / "flan-t5-base_glue-cola_lora-16"
    fake.mkdir(parents=True)
    (fake / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", f"{tmp_path}:{nlp_env.model_root}")
    pool = FlanT5GlueModelPool("flan-t5-base-glue-lora16", tasks=["cola"])
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        pool.tensors("cola")
