"""Gram-based merging on a T5 whose output head is tied to the shared embedding (one ``shared.weight``).

The tiny ``google/flan-t5-base`` is saved as transformers 5 saves T5 (only ``shared.weight``, the head
tied to it); the tiny ``flan-t5-large`` as the hub's Flan-T5 files are (``lm_head.weight`` its own).
"""

from __future__ import annotations

import pytest
import torch

from fusionbench_core.protocols import DataRequest
from fusionbench_nlp.flan_t5_glue import FlanT5GlueModelPool

TASKS = ["cola", "rte"]
EXAMPLES = 4


def _lm_head_grams(pool: FlanT5GlueModelPool, task: str) -> torch.Tensor:
    """XᵀX / n of the head's inputs on ``task``'s first training prompts, by a hook of our own."""
    model = pool.load_model(task).eval()
    rows = []
    handle = model.lm_head.register_forward_pre_hook(
        lambda _m, args: rows.append(args[0].reshape(-1, args[0].shape[-1])))
    try:
        with torch.no_grad():
            for inputs, _ in pool.batches(task, DataRequest(split="train", examples=EXAMPLES, labelled=False),
                                          batch_size=EXAMPLES):
                pool.logits(task, model, inputs)
    finally:
        handle.remove()
    x = torch.cat(rows).double()
    return x.T @ x / x.shape[0]


def test_regmean_merges_a_tied_head_once_and_keeps_it_tied(nlp_env, tmp_path, monkeypatch):
    from fusionbench_data_methods.regmean import RegMean

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS)
    assert "lm_head.weight" not in pool.tensors(TASKS[0]).keys()  # the tied layout
    alpha = 0.9
    merged = RegMean(alpha=alpha, examples=EXAMPLES, batch_size=EXAMPLES, cache=False).run(pool)
    assert merged.lm_head.weight is merged.shared.weight
    assert merged.encoder.embed_tokens.weight is merged.shared.weight

    # By hand: the head's regression solution (Σ G̃_i) W*ᵀ = Σ G̃_i W_iᵀ, G̃ = αG + (1-α) diag(G).
    lhs = rhs = 0
    for task in TASKS:
        gram = _lm_head_grams(pool, task)
        shrunk = alpha * gram + (1 - alpha) * torch.diag(torch.diagonal(gram))
        lhs = lhs + shrunk
        rhs = rhs + shrunk @ pool.tensors(task).get("shared.weight").double().T
    expected = torch.linalg.solve(lhs, rhs).T
    mean = sum(pool.tensors(t).get("shared.weight") for t in TASKS) / len(TASKS)
    error = (merged.shared.weight.double() - expected).abs().max().item()
    assert error < 2e-4  # float32 Grams and solve against float64 here
    assert (expected - mean.double()).abs().max().item() > 20 * error  # the plain mean is far from it


@pytest.mark.parametrize("method", ["regmean_plusplus", "mats"])
def test_other_gram_methods_run_on_the_tied_layout_and_keep_the_tie(nlp_env, tmp_path, monkeypatch, method):
    from fusionbench_data_methods.mats import MaTS
    from fusionbench_data_methods.regmean_plusplus import RegMeanPlusPlus

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    pool = FlanT5GlueModelPool("flan-t5-base-glue", tasks=TASKS)
    algorithm = (RegMeanPlusPlus(examples=EXAMPLES, batch_size=EXAMPLES) if method == "regmean_plusplus"
                 else MaTS(examples=EXAMPLES, batch_size=EXAMPLES, cache=False))
    merged = algorithm.run(pool)
    assert merged.lm_head.weight is merged.shared.weight
    if method == "regmean_plusplus":
        # The embedding runs first, so the tied tensor keeps its merged value there: the mean.
        mean = sum(pool.tensors(t).get("shared.weight") for t in TASKS) / len(TASKS)
        torch.testing.assert_close(merged.shared.weight, mean)


def test_regmean_solves_an_untied_head_of_its_own(nlp_env, tmp_path, monkeypatch):
    from fusionbench_data_methods.regmean import RegMean

    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    pool = FlanT5GlueModelPool("flan-t5-large-glue-lora16", tasks=TASKS)
    assert "lm_head.weight" in pool.tensors(TASKS[0]).keys()
    merged = RegMean(alpha=0.9, examples=EXAMPLES, batch_size=EXAMPLES, cache=False).run(pool)
    assert merged.lm_head.weight is not merged.shared.weight
    # LoRA touches q and v only: every expert's head is the pretrained one, and so is the merge.
    torch.testing.assert_close(merged.lm_head.weight, pool.tensors("_pretrained_").get("lm_head.weight"))
