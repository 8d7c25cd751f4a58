"""Ensembles: section C.11 invariants, the combination rules against hand-computed values, and the CLI."""

from __future__ import annotations

import pytest
import torch
from fusionbench_data_methods.ensemble_model import EnsembleModel, task_logits
from fusionbench_data_methods.majority_vote_ensemble import MajorityVoteEnsemble
from fusionbench_data_methods.weighted_ensemble import WeightedEnsemble
from torch import nn

from fusionbench_core.errors import ConfigError


def _members(count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    members = []
    for _ in range(count):
        layer = nn.Linear(4, 3).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(3, 4, generator=gen, dtype=torch.float64))
            layer.bias.copy_(torch.randn(3, generator=gen, dtype=torch.float64))
        members.append(layer)
    return members


def _identity(member, x):
    return member(x)


X = torch.randn(10, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


@pytest.mark.parametrize("rule", ["logits", "probabilities", "vote", "max"])
def test_identical_members_give_the_member(rule):
    member = _members(1)[0]
    ensemble = EnsembleModel([member, member, member], rule=rule)
    scores = ensemble.predict_logits(_identity, X)
    expected = member(X)
    if rule == "logits":
        torch.testing.assert_close(scores, expected)
        torch.testing.assert_close(ensemble(X), expected)
    elif rule in ("probabilities", "max"):
        torch.testing.assert_close(scores, torch.log_softmax(expected, dim=-1))
    assert torch.equal(scores.argmax(dim=-1), expected.argmax(dim=-1))


@pytest.mark.parametrize("rule", ["logits", "probabilities", "vote", "max"])
def test_one_hot_weights_select_a_member(rule):
    members = _members(3)
    ensemble = EnsembleModel(members, [0.0, 1.0, 0.0], rule=rule)
    expected = members[1](X)
    assert torch.equal(ensemble.predict(_identity, X), expected.argmax(dim=-1))
    if rule == "logits":
        torch.testing.assert_close(ensemble(X), expected)
    if rule == "probabilities":
        torch.testing.assert_close(ensemble.predict_logits(_identity, X), torch.log_softmax(expected, dim=-1))


def test_vote_with_one_member_is_that_model():
    member = _members(1, seed=3)[0]
    ensemble = EnsembleModel([member], rule="vote")
    assert torch.equal(ensemble.predict(_identity, X), member(X).argmax(dim=-1))


def test_combination_rules_match_hand_computed_values():
    a = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64)
    pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
    logits = EnsembleModel(_members(2), [1.0, 3.0], rule="logits").combine([a, b])
    torch.testing.assert_close(logits, 0.25 * a + 0.75 * b)
    probs = EnsembleModel(_members(2), [1.0, 3.0], rule="probabilities").combine([a, b])
    torch.testing.assert_close(probs.exp(), 0.25 * pa + 0.75 * pb)
    best = EnsembleModel(_members(2), rule="max").combine([a, b])
    torch.testing.assert_close(best.exp(), torch.maximum(pa, pb))
    # a mean of logits and a mean of probabilities disagree here: one confident member against two
    c = torch.tensor([[10.0, 0.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, -5.0, 3.0]], dtype=torch.float64)
    assert EnsembleModel(_members(3), rule="logits").combine([c, d, d]).argmax().item() == 0
    assert EnsembleModel(_members(3), rule="probabilities").combine([c, d, d]).argmax().item() == 2
    assert EnsembleModel(_members(3), rule="vote").combine([c, d, d]).argmax().item() == 2
    assert EnsembleModel(_members(3), rule="max").combine([c, d, d]).argmax().item() == 0


def test_vote_ties_go_to_the_lowest_class_index():
    votes_for_2 = torch.tensor([[0.0, 0.0, 5.0]], dtype=torch.float64)
    votes_for_1 = torch.tensor([[0.0, 5.0, 0.0]], dtype=torch.float64)
    votes_for_0 = torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)
    vote = EnsembleModel(_members(2), rule="vote")
    assert vote.combine([votes_for_2, votes_for_1]).argmax(dim=-1).item() == 1
    vote3 = EnsembleModel(_members(3), rule="vote")
    assert vote3.combine([votes_for_2, votes_for_0, votes_for_1]).argmax(dim=-1).item() == 0
    assert vote3.combine([votes_for_2, votes_for_2, votes_for_0]).argmax(dim=-1).item() == 2
    assert torch.isfinite(vote3.combine([votes_for_2, votes_for_2, votes_for_0])).all()


def test_backbone_mean_is_the_logit_mean_under_a_linear_head(tiny_modelpool):
    pool = tiny_modelpool()
    ensemble = WeightedEnsemble(weights=[1, 2, 3]).run(pool)
    task = pool.suite.tasks["task1"]
    members = [pool.load_model(name) for name in pool.model_names]
    expected = sum(w * task.head(m(task.x_test)) for w, m in zip([1 / 6, 2 / 6, 3 / 6], members))
    torch.testing.assert_close(task.head(ensemble(task.x_test)), expected)
    torch.testing.assert_close(task_logits(ensemble, lambda m, x: task.head(m(x)), task.x_test), expected)


def test_post_head_rules_refuse_to_run_as_a_backbone(tiny_modelpool):
    ensemble = MajorityVoteEnsemble().run(tiny_modelpool())
    with pytest.raises(ConfigError, match="after the task head"):
        ensemble(torch.zeros(2, 8, dtype=torch.float64))


def test_bad_weights_are_rejected(tiny_modelpool):
    with pytest.raises(ConfigError, match="model_weights|weights"):
        WeightedEnsemble(weights=[1, 2]).run(tiny_modelpool())
    with pytest.raises(ConfigError):
        EnsembleModel(_members(2), [-1.0, 2.0])


@pytest.mark.parametrize("method", ["majority_vote_ensemble", "max_model_predictor", "simple_ensemble"])
def test_ensembles_run_through_a_predictor_task_pool(fb_cli, tmp_path, predictor_taskpool, method, tiny_taskpool):
    extra = ["-s", "combine=probabilities"] if method == "simple_ensemble" else []
    result = fb_cli("run", "-m", method, "-p", "tiny", "-t", predictor_taskpool, "--json", *extra,
                    "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    report = result.json
    assert report["cost"]["members"] == 3 and report["cost"]["forward_passes_per_input"] == 3
    assert 0.0 <= report["average"]["accuracy"] <= 1.0
    # the report's accuracy is the rule's accuracy, recomputed here by hand
    pool = tiny_taskpool()
    hits = []
    for task in pool.suite.tasks.values():
        probs = torch.stack([torch.softmax(task.head(pool.suite.finetuned[n](task.x_test)), -1)
                             for n in pool.suite.finetuned])
        if method == "majority_vote_ensemble":
            counts = nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)
            predicted = counts.argmax(-1)
        elif method == "max_model_predictor":
            predicted = probs.amax(0).argmax(-1)
        else:
            predicted = probs.mean(0).argmax(-1)
        hits.append(float((predicted == task.y_test).double().mean()))
    assert report["average"]["accuracy"] == pytest.approx(sum(hits) / len(hits))
