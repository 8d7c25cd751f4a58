"""The fused "model" of the ensemble methods, and the predictor protocol it offers task pools.

A task pool scores a backbone as ``head(model(inputs))``. An ensemble whose rule is linear in the
members' outputs can be such a backbone: :meth:`EnsembleModel.forward` returns ``Σ w_i f_i(x)``, the
weighted mean of the members' *backbone outputs*. Whenever the pool's head is affine in the backbone
output (a linear classifier, as in the tiny suite), ``head(Σ w_i f_i) = Σ w_i head(f_i)``: the mean of
the members' **logits**. (A head that first normalises the features, like CLIP's zero-shot head, sees
a mean of features instead; only :meth:`predict_logits` gives an exact logit mean there.)

Rules that act after the head (mean of **probabilities**, majority vote, max-model predictor) cannot
be expressed as one backbone output; they need the head of the task being scored. For these the
ensemble is a *predictor*: :meth:`EnsembleModel.predict_logits(logits_of, inputs)` takes the task
pool's own ``logits_of(member, inputs)`` (its head applied to a member's output) and combines the
members' logits. A task pool that knows predictors calls :func:`task_logits` instead of
``head(model(inputs))``; calling ``forward`` of a post-head rule raises a one-line error that says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import Predictor, task_logits  # noqa: F401 - re-exported for callers

RULES = ("logits", "probabilities", "vote", "max")
"""``logits``: weighted mean of logits; ``probabilities``: weighted mean of softmax probabilities;
``vote``: majority vote of the members' argmax, ties to the lowest class index; ``max``: max-model
predictor, the class scored ``max_i p_i(y|x)``."""

VOTE_FLOOR = 1e-6
"""Smallest vote share a class is given in the log-scores of a vote, so losses stay finite."""


class EnsembleModel(nn.Module):
    """Members combined by ``rule`` (see :data:`RULES`) with weights ``w`` normalised to sum to 1.

    :meth:`forward` (rule ``logits`` only) returns the weighted mean of the members' backbone outputs;
    :meth:`predict_logits` returns, for every rule, scores whose argmax is the ensemble's prediction:
    weighted mean logits (``logits``), log of the weighted mean probabilities (``probabilities``), log
    of the (floored) vote shares (``vote``) or ``log max_i p_i(y|x)`` (``max``), so a task pool's
    cross-entropy on them is the ensemble's negative log-likelihood where the rule defines one.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None, rule: str = "logits"):
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if rule not in RULES:
            raise ConfigError(f"unknown ensemble rule '{rule}'; choose one of {', '.join(RULES)}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise ConfigError(f"ensemble: {len(weights)} weights for {len(members)} members")
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ConfigError("ensemble weights must be finite, non-negative and sum to more than 0")
        total = sum(weights)
        self.members = nn.ModuleList(members)
        self.weights = [w / total for w in weights]
        self.rule = rule

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``Σ w_i member_i(...)``: a backbone output any task pool can put its head on (rule ``logits``)."""
        if self.rule != "logits":
            raise ConfigError(
                f"a '{self.rule}' ensemble combines predictions after the task head, but this task pool "
                "applies its head to one backbone output; it must score predictors "
                "(fusionbench_data_methods.ensemble_model.task_logits)"
            )
        total = None
        for weight, member in zip(self.weights, self.members, strict=True):
            if weight == 0:
                continue
            out = member(*args, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise ConfigError(f"ensemble members must return tensors to be averaged, got {type(out).__name__}")
            total = out * weight if total is None else total + out * weight
        return total

    def predict_logits(self, logits_of: Callable[[Any, Any], torch.Tensor], inputs: Any) -> torch.Tensor:
        """Combine ``logits_of(member, inputs)`` of every member with a non-zero weight by :attr:`rule`."""
        used = [(w, m) for w, m in zip(self.weights, self.members, strict=True) if w > 0]
        return self.combine([logits_of(member, inputs) for _, member in used], [w for w, _ in used])

    def combine(self, member_logits: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
        """The ensemble's scores from its members' logits ``(batch, classes)`` (weights default to :attr:`weights`)."""
        weights = list(self.weights if weights is None else weights)
        total = sum(weights)
        weights = [w / total for w in weights]
        stacked = torch.stack(list(member_logits))  # (members, batch, classes)
        w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device).view(-1, 1, 1)
        if self.rule == "logits":
            return (w * stacked).sum(dim=0)
        if self.rule == "probabilities":
            return torch.logsumexp(torch.log_softmax(stacked, dim=-1) + torch.log(w), dim=0)
        if self.rule == "max":
            return torch.log_softmax(stacked, dim=-1).amax(dim=0)
        votes = torch.nn.functional.one_hot(stacked.argmax(dim=-1), stacked.shape[-1]).to(stacked.dtype)
        shares = (votes * w).sum(dim=0) if len(set(weights)) > 1 else votes.sum(dim=0) / len(weights)
        return torch.log(shares.clamp_min(VOTE_FLOOR))

    def predict(self, logits_of: Callable[[Any, Any], torch.Tensor], inputs: Any) -> torch.Tensor:
        """Predicted classes: the argmax of :meth:`predict_logits`; ties go to the lowest class index."""
        return self.predict_logits(logits_of, inputs).argmax(dim=-1)


def build_ensemble(algorithm: Any, modelpool: Any, rule: str, weights: Sequence[float] | None = None) -> EnsembleModel:
    """Load every fine-tuned model of ``modelpool`` and wrap them; fills ``algorithm.cost``."""
    names = list(modelpool.model_names)
    if not names:
        raise ConfigError(f"model pool '{modelpool.name}' holds no models to ensemble")
    members = []
    for name in names:
        member = modelpool.load_model(name)
        member.eval()
        members.append(member)
    model = EnsembleModel(members, weights, rule)
    active = sum(1 for w in model.weights if w > 0)
    algorithm.cost = {"members": len(members), "forward_passes_per_input": active, "examples": 0,
                      "forward_passes": 0, "backward_passes": 0}
    return model
