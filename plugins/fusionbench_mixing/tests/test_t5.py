"""The mixing methods on the Flan-T5 pools (tiny random T5 in the hub's file layout), and on GPT-2's Conv1D.

The pools declare the architecture (:meth:`FlanT5GlueModelPool.architecture`); the methods never name T5.
"""

from __future__ import annotations

import pytest
import torch

from fusionbench_core import PRETRAINED, DataRequest
from fusionbench_core.testing import invoke_fb

TASKS = ["cola", "rte"]
CLI_TASKS = ["-s", "modelpool.tasks=cola,rte", "-s", "taskpool.tasks=cola,rte", "-s", "taskpool.max_examples=4",
             "-s", "taskpool.device=cpu"]
METHODS = {"smile": ["-s", "expert_rank=4", "-s", "gate_rank=2"],
           "wemoe": ["-s", "steps=2", "-s", "batch_size=2", "-s", "device=cpu"]}


@pytest.fixture(scope="module")
def t5_hub(tmp_path_factory):
    """Tiny Flan-T5 (base full and LoRA, large LoRA), tiny GPT-2 and GLUE; the environment points at them."""
    pytest.importorskip("fusionbench_nlp")
    from fusionbench_nlp.runtime import quiet_transformers
    from fusionbench_nlp.tiny_hub import write_flan_t5, write_glue, write_gpt2

    quiet_transformers()
    base = tmp_path_factory.mktemp("mixing-t5")
    write_glue(base / "data")
    with torch.random.fork_rng():
        write_flan_t5(base / "models")
        write_gpt2(base / "models")
    patch = pytest.MonkeyPatch()
    for key, value in {"FUSIONBENCH_MODEL_ROOT": base / "models", "FUSIONBENCH_DATA_ROOT": base / "data",
                       "HF_DATASETS_CACHE": base / "hf-datasets", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "FUSIONBENCH_PROGRESS": "0"}.items():
        patch.setenv(key, str(value))
    yield base
    patch.undo()


def _inputs(pool, task="cola", n=4):
    return next(pool.batches(task, DataRequest(split="test", examples=n, labelled=False), batch_size=n))[0]


def _first_step_logits(model, inputs):
    """Full-vocabulary logits of the first decoder step (what the pool's class logits are read from)."""
    start = torch.zeros((inputs["input_ids"].shape[0], 1), dtype=torch.long)
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     decoder_input_ids=start).logits[:, 0]


def test_the_flan_t5_pool_declares_both_stacks_mlps_and_linears(t5_hub):
    from fusionbench_mixing.backbone import linear_names, mlp_names
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool

    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS)
    spec = pool.architecture()
    model = pool.load_model(PRETRAINED)
    layers = model.config.num_layers
    assert mlp_names(model, spec, "m", pool.name) == (
        [f"encoder.block.{i}.layer.1.DenseReluDense" for i in range(layers)]
        + [f"decoder.block.{i}.layer.2.DenseReluDense" for i in range(layers)])
    linears = linear_names(model, spec, "m", pool.name)
    assert linears == [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in linears and "decoder.block.0.layer.1.EncDecAttention.q" in linears


def test_smile_with_one_expert_at_full_rank_reproduces_the_fine_tuned_model(t5_hub):
    from fusionbench_mixing.modules import SmileLinear
    from fusionbench_mixing.smile import SmileUpscaling
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool

    # LoRA experts differ from the pretrained model in linear layers only, so the whole model is reproduced.
    pool = FlanT5GlueModelPool("flan-t5-base-glue-lora16", tasks=["cola"])
    fused = SmileUpscaling(expert_rank=10_000, gate_rank=1, top_k=1).run(pool)
    expert = pool.load_model("cola")
    inputs = _inputs(pool)
    pretrained = _first_step_logits(pool.load_model(PRETRAINED), inputs)
    wanted = _first_step_logits(expert, inputs)
    error = (_first_step_logits(fused, inputs) - wanted).abs().max().item()
    assert error < 1e-4  # float32 SVD round-off
    assert (wanted - pretrained).abs().max().item() > 100 * error  # the expert differs from the pretrained model

    # A full fine-tune: every SMILE layer equals its fine-tuned linear layer on any input.
    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=["rte"])
    fused = SmileUpscaling(expert_rank=10_000, gate_rank=1, top_k=1).run(pool)
    expert = pool.load_model("rte")
    smiles = {name: m for name, m in fused.named_modules() if isinstance(m, SmileLinear)}
    assert len(smiles) == sum(isinstance(m, torch.nn.Linear) for m in expert.modules())
    x = torch.randn(3, 5, fused.config.d_model, generator=torch.Generator().manual_seed(0))
    for name, smile in smiles.items():
        linear = expert.get_submodule(name)
        if linear.in_features != x.shape[-1]:
            continue
        with torch.no_grad():
            torch.testing.assert_close(smile(x), linear(x), rtol=1e-4, atol=1e-5)


def test_wemoe_with_a_constant_router_is_task_arithmetic_on_t5(t5_hub):
    from fusionbench_methods.task_arithmetic import TaskArithmetic
    from fusionbench_mixing.modules import WeightEnsemblingMLP
    from fusionbench_mixing.wemoe import WeightEnsemblingMoE
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool

    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS)
    fused = WeightEnsemblingMoE(steps=0, router_init_std=0.0, device="cpu").run(pool)
    assert sum(isinstance(m, WeightEnsemblingMLP) for m in fused.modules()) == 2 * fused.config.num_layers
    merged = TaskArithmetic(scaling_factor=0.3).run(pool)
    inputs = _inputs(pool)
    torch.testing.assert_close(_first_step_logits(fused, inputs), _first_step_logits(merged, inputs),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_mixing_runs_saves_and_reloads_on_flan_t5_through_the_cli(name, t5_hub, tmp_path):
    run = invoke_fb("run", "-m", name, "-p", "flan-t5-base-glue", *CLI_TASKS, "-o", str(tmp_path), "--save-model",
                    "--json", *METHODS[name])
    assert run.exit_code == 0, run.stderr
    assert list(run.json["tasks"]) == TASKS
    assert run.json["cost"]["parameters"] > run.json["cost"]["dense_parameters"]
    if name == "wemoe":
        assert run.json["cost"]["adaptation_steps"] == 2 and run.json["cost"]["forward_passes"] >= 2 * 2 * 2
    evaluated = invoke_fb("eval", str(tmp_path / "model"), "-p", "flan-t5-base-glue", *CLI_TASKS, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert next(iter(evaluated.json.values()))["tasks"] == run.json["tasks"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_saved_t5_mixture_generates_exactly_what_it_did(name, t5_hub, tmp_path):
    from fusionbench_core.plugins import get_host
    from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool, FlanT5GlueTaskPool

    cls = get_host().registry("method").entry(name).load()
    settings = {key.split("=")[0]: key.split("=")[1] for key in METHODS[name][1::2]}
    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS)
    method = cls(**settings)
    fused = method.run(pool)
    method.save_fused(fused, tmp_path)
    loaded = cls.load_fused(FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS), tmp_path)
    inputs = _inputs(pool, "rte")
    assert torch.equal(_first_step_logits(loaded, inputs), _first_step_logits(fused, inputs))
    taskpool = FlanT5GlueTaskPool("flan-t5-base-glue", tasks=TASKS, batch_size=2, device="cpu")
    ids = inputs["input_ids"].tolist()
    ids = [row[:int(m.sum())] for row, m in zip(ids, inputs["attention_mask"])]
    assert taskpool.generate(loaded, ids) == taskpool.generate(fused, ids)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_gpt2s_conv1d_layers_are_refused_in_one_line_naming_the_type(name, t5_hub, tmp_path):
    run = invoke_fb("run", "-m", name, "-p", "gpt2-glue", "-s", "modelpool.tasks=cola,rte",
                    "-s", "taskpool.tasks=cola,rte", "-o", str(tmp_path), *METHODS[name])
    assert run.exit_code != 0
    message = run.stderr.strip()
    assert "Conv1D" in message and len(message.splitlines()) == 1
