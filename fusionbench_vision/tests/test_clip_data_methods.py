"""Every data method on the tiny CLIP fixture (upstream's layout: ``vision_model.*`` checkpoints).

The pool's tensors keep checkpoint names while transformers 5's ``CLIPVisionModel`` names its
parameters without the ``vision_model.`` prefix; methods pair the two through the pool's declared
mapping (:func:`fusionbench_core.naming.tensor_naming`). Each merge is checked against the plain
average (it must differ) and, where one exists, an independent reference: RegMean against a float64
closed-form solve on Grams hooked here, Fisher merging against per-example autograd gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusionbench_core import DataRequest
from fusionbench_core.errors import ConfigError
from fusionbench_core.plugins import get_host

SUITE = "clip-vit-b32-ta8"
EXAMPLES = 4
"""Training inputs per task for the statistics methods (the fixture has 8 per task)."""

DATA_METHODS = sorted(entry.name for entry in get_host().registry("method").entries()
                      if entry.distribution == "fusionbench-data-methods")
"""Every method of the data-methods plugin, ensembles included: a new one runs here without editing this file."""

CLI_ARGS = {
    "weighted_ensemble": ["-s", "weights=[1,2,3,4,5,6,7,8]"],
    "fisher_merging": ["-s", f"examples={EXAMPLES}"],
    "regmean": ["-s", f"examples={EXAMPLES}"],
    "regmean_plusplus": ["-s", f"examples={EXAMPLES}"],
    "mats": ["-s", f"examples={EXAMPLES}"],
    "task_wise_adamerging": ["-s", "steps=2", "-s", "device=cpu"],
    "layer_wise_adamerging": ["-s", "steps=2", "-s", "device=cpu"],
}


def _pool():
    from fusionbench_vision.modelpool import CLIPVisionModelPool

    return CLIPVisionModelPool(SUITE)


def _prefix(pool) -> str:
    """How the loaded ``CLIPVisionModel`` names its tower: ``vision_model.`` under transformers 4, nothing under 5."""
    return "vision_model." if hasattr(pool.load_model("_pretrained_"), "vision_model") else ""


def _modules(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}


def _experts(pool) -> list[dict[str, torch.Tensor]]:
    return [_modules(pool.load_model(name)) for name in pool.model_names]


def _max_gap_from_average(merged: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]) -> float:
    return max(float((merged[k] - sum(e[k] for e in experts) / len(experts)).abs().max()) for k in merged)


@pytest.mark.parametrize("method", DATA_METHODS)
def test_fb_run_every_data_method_on_the_clip_suite(method, clip_roots, fb_cli, tmp_path):
    result = fb_cli("run", "-m", method, "-p", SUITE, "--json", "--no-store", "-s", "taskpool.num_workers=0",
                    *CLI_ARGS.get(method, []), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr + str(result.exception)
    report = result.json
    assert report["method"] == method and len(report["tasks"]) == 8
    if method in ("regmean", "mats"):
        assert report["cost"]["linear_layers"] == 12  # q, k, v, out, fc1, fc2 in each of the 2 blocks


def _linear_inputs(pool, name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Model ``name`` and ``XᵀX / n`` (float64) of every ``nn.Linear`` input on its first EXAMPLES train images."""
    model = pool.load_model(name).eval()
    rows: dict[str, list[torch.Tensor]] = {}
    handles = [module.register_forward_pre_hook(
        lambda _m, args, layer=layer: rows.setdefault(layer, []).append(args[0].detach().reshape(-1, args[0].shape[-1])))
        for layer, module in model.named_modules() if isinstance(module, nn.Linear)]
    request = DataRequest(split="train", examples=EXAMPLES, labelled=False)
    with torch.no_grad():
        for inputs, _ in pool.batches(name, request):
            pool.logits(name, model, inputs)
    for handle in handles:
        handle.remove()
    grams = {}
    for layer, parts in rows.items():
        x = torch.cat(parts).double()
        grams[layer] = x.T @ x / x.shape[0]
    return model, grams


def test_regmean_equals_a_float64_closed_form_solve(clip_roots):
    from fusionbench_data_methods.regmean import RegMean

    pool = _pool()
    alpha = 0.95
    merged = _modules(RegMean(alpha=alpha, examples=EXAMPLES, cache=False).run(pool))
    experts, grams = [], []
    for name in pool.model_names:
        model, gram = _linear_inputs(pool, name)
        experts.append(_modules(model))
        grams.append(gram)
    layers = sorted(grams[0])
    assert len(layers) == 12
    for layer in layers:
        lhs = rhs = 0
        for gram, expert in zip(grams, experts):
            g = gram[layer]
            shrunk = alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))
            lhs = lhs + shrunk
            rhs = rhs + shrunk @ expert[f"{layer}.weight"].double().T
        expected = torch.linalg.solve(lhs, rhs).T
        torch.testing.assert_close(merged[f"{layer}.weight"].double(), expected, rtol=2e-4, atol=2e-5)
    weights = {f"{layer}.weight" for layer in layers}
    for key, value in merged.items():  # everything else: the plain mean
        if key not in weights:
            torch.testing.assert_close(value, sum(e[key] for e in experts) / len(experts))
    assert _max_gap_from_average({k: merged[k] for k in weights}, experts) > 1e-3


def test_fisher_merging_equals_per_example_autograd_fishers(clip_roots):
    from fusionbench_data_methods.fisher_merging import FisherMerging

    pool = _pool()
    merged = _modules(FisherMerging(examples=EXAMPLES, cache=False).run(pool))
    keys = [_prefix(pool) + key for key in ("encoder.layers.1.mlp.fc2.weight", "encoder.layers.0.self_attn.q_proj.bias",
                                            "post_layernorm.weight", "embeddings.class_embedding")]
    numerator = {k: 0 for k in keys}
    denominator = {k: 0 for k in keys}
    experts = []
    request = DataRequest(split="train", examples=EXAMPLES, labelled=True)
    for name in pool.model_names:
        model = pool.load_model(name).eval()
        params = dict(model.named_parameters())
        fisher = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in keys}
        count = 0
        for inputs, labels in pool.batches(name, request, batch_size=1):
            log_p = torch.log_softmax(pool.logits(name, model, inputs).double(), dim=-1)[0, int(labels[0])]
            for k, grad in zip(keys, torch.autograd.grad(log_p, [params[k] for k in keys])):
                fisher[k] += grad.double() ** 2
            count += 1
        assert count == EXAMPLES
        state = _modules(model)
        experts.append(state)
        for k in keys:
            numerator[k] = numerator[k] + fisher[k] / count * state[k].double()
            denominator[k] = denominator[k] + fisher[k] / count
    for k in keys:
        torch.testing.assert_close(merged[k].double(), numerator[k] / denominator[k], rtol=1e-4, atol=1e-6)
    assert _max_gap_from_average(merged, experts) > 1e-3  # not the plain average


def test_statistics_and_adaptive_merges_differ_from_the_average(clip_roots):
    from fusionbench_data_methods.layer_wise_adamerging import LayerWiseAdaMerging
    from fusionbench_data_methods.mats import MaTS
    from fusionbench_data_methods.regmean import RegMean
    from fusionbench_data_methods.regmean_plusplus import RegMeanPlusPlus
    from fusionbench_data_methods.task_wise_adamerging import TaskWiseAdaMerging

    pool = _pool()
    experts = _experts(pool)
    regmean = _modules(RegMean(examples=EXAMPLES, cache=False).run(pool))
    plusplus = _modules(RegMeanPlusPlus(examples=EXAMPLES).run(pool))
    mats = _modules(MaTS(examples=EXAMPLES, cache=False).run(pool))
    for merged in (regmean, plusplus, mats):
        assert _max_gap_from_average(merged, experts) > 1e-3
    # RegMean++ takes the Grams on merged embeddings and lower blocks: not RegMean
    key = _prefix(pool) + "encoder.layers.1.mlp.fc1.weight"
    gap = (plusplus[key] - regmean[key]).abs().max()
    assert gap > 1e-4

    base = _modules(pool.load_model("_pretrained_"))
    task_arithmetic = {k: base[k] + 0.3 * sum(e[k] - base[k] for e in experts) for k in base}
    for cls in (TaskWiseAdaMerging, LayerWiseAdaMerging):
        start = _modules(cls(steps=0, device="cpu").run(pool))  # every tensor found under its pool name
        for key, value in task_arithmetic.items():
            torch.testing.assert_close(start[key], value)
        method = cls(steps=3, lr=0.05, device="cpu", clamp="none")
        trained = _modules(method.run(pool))
        assert (method.coefficients - 0.3).abs().max() > 1e-3
        assert max(float((trained[k] - task_arithmetic[k]).abs().max()) for k in trained) > 1e-4
        assert _max_gap_from_average(trained, experts) > 1e-3


def test_mats_from_task_arithmetic_with_no_iterations(clip_roots):
    from fusionbench_data_methods.mats import MaTS

    pool = _pool()
    experts = _experts(pool)
    base = _modules(pool.load_model("_pretrained_"))
    merged = _modules(MaTS(examples=EXAMPLES, iterations=0, init_scaling_factor=0.4, cache=False).run(pool))
    key = _prefix(pool) + "encoder.layers.0.mlp.fc2.weight"
    torch.testing.assert_close(merged[key], base[key] + 0.4 * sum(e[key] - base[key] for e in experts))


def test_a_pool_whose_names_do_not_match_its_model_is_a_one_line_error(clip_roots, monkeypatch):
    from fusionbench_data_methods.fisher_merging import FisherMerging
    from fusionbench_data_methods.regmean import RegMean
    from fusionbench_vision.modelpool import CLIPVisionModelPool

    pool = _pool()
    pool.load_model("_pretrained_")  # the pool's own check passed with the real mapping
    wrong = "vision_model." if hasattr(pool.load_model("_pretrained_"), "vision_model") else ""
    monkeypatch.setattr(CLIPVisionModelPool, "module_name", lambda self, key: wrong + key)
    for method in (RegMean(examples=EXAMPLES, cache=False), FisherMerging(examples=EXAMPLES, cache=False)):
        with pytest.raises(ConfigError) as error:
            method.run(pool)
        message = str(error.value)
        assert "\n" not in message and f"'{SUITE}'" in message and "vision_model." in message
    with pytest.raises(ConfigError, match=SUITE):  # a fresh pool checks the contract when first used
        _pool().load_model("mnist")
