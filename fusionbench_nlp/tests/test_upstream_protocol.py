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
