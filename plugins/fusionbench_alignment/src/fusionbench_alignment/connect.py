"""Mode connectivity: loss and error along linear paths and Bézier curves between two models, and their barriers.

Definitions (pinned, see docs/alignment.md):

- the path: ``θ(α_k) = w_A·θ_A + w_B·θ_B`` with ``w_A = (K−k)/K``, ``w_B = k/K``, ``k = 0…K`` (25 points:
  ``K = 24``); the weights are exact, so the endpoints are the models themselves and the path from
  B to A visits the same states as the path from A to B;
- the loss barrier (Entezari et al. 2022): ``max_k [L(α_k) − ((1−α_k)·L_A + α_k·L_B)]``;
- the error barrier (Frankle et al. 2020): ``max_k err(α_k) − (err_A + err_B)/2``;
- the curve (Garipov et al. 2018): ``θ(t) = (1−t)²θ_A + 2t(1−t)θ_C + t²θ_B`` with one trainable
  control point ``θ_C`` (initialised at the midpoint), trained on the task's training data with
  ``t ~ U(0, 1)`` per step; its barriers use the same formulas on the grid of ``t``.

At every point of a network with BatchNorm layers the running statistics are re-estimated on
training inputs (endpoints included, so the curve compares like with like); without BatchNorm the
endpoint losses are exactly the models' own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fusionbench_core import DataRequest

from .common import has_batchnorm, reset_batchnorm


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], k: int, K: int) -> dict:
    """``((K−k)/K)·A + (k/K)·B`` for float tensors; other tensors from A."""
    wa, wb = (K - k) / K, k / K
    return {key: (wa * a + wb * state_b[key]) if a.is_floating_point() else a.clone() for key, a in state_a.items()}


@torch.no_grad()
def evaluate(model: nn.Module, modelpool: Any, task: str, *, examples: int | None = None,
             batch_size: int = 256) -> dict[str, float]:
    """``{"loss", "accuracy", "error"}`` (mean cross-entropy, top-1) of ``model`` on ``task``'s test split."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    request = DataRequest(split="test", examples=examples, labelled=True)
    for inputs, labels in modelpool.batches(task, request, batch_size=batch_size):
        logits = modelpool.logits(task, model, inputs).to(torch.float64)
        labels = labels.to(logits.device)
        total += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += int(labels.numel())
    return {"loss": total / count, "accuracy": correct / count, "error": 1.0 - correct / count}


def score_state(modelpool: Any, state: Mapping[str, torch.Tensor], task: str, *, reset_bn: bool = True,
                bn_examples: int = 512, examples: int | None = None, batch_size: int = 256) -> dict[str, float]:
    """Build ``state`` with the pool, re-estimate BatchNorm statistics (if any, and asked), score on ``task``."""
    model = modelpool.build_model(dict(state))
    if reset_bn and has_batchnorm(model):
        reset_batchnorm(model, modelpool, [task], bn_examples, batch_size)
    return evaluate(model, modelpool, task, examples=examples, batch_size=batch_size)


def barriers(alphas: list[float], losses: list[float], errors: list[float]) -> dict[str, float]:
    """The loss barrier (Entezari 2022) and the error barrier (Frankle 2020) of a path sampled at ``alphas``."""
    la, lb = losses[0], losses[-1]
    loss_barrier = max(loss - ((1 - a) * la + a * lb) for a, loss in zip(alphas, losses))
    error_barrier = max(errors) - (errors[0] + errors[-1]) / 2
    return {"loss_barrier": float(loss_barrier), "error_barrier": float(error_barrier)}


def linear_path(modelpool: Any, state_a: Mapping, state_b: Mapping, task: str, *, points: int = 25,
                **score: Any) -> dict[str, Any]:
    """Loss, accuracy and error at ``points`` evenly spaced points of the segment A→B, and its barriers."""
    K = points - 1
    rows = [score_state(modelpool, interpolate(state_a, state_b, k, K), task, **score) for k in range(points)]
    return _path([k / K for k in range(points)], rows)


def _path(alphas: list[float], rows: list[dict[str, float]]) -> dict[str, Any]:
    out = {"alpha": alphas, "loss": [r["loss"] for r in rows], "accuracy": [r["accuracy"] for r in rows],
           "error": [r["error"] for r in rows]}
    out.update(barriers(alphas, out["loss"], out["error"]))
    return out


class _CurveModel(nn.Module):
    """The model at ``t`` on a quadratic Bézier curve, as a module whose only parameters are the control point's."""

    def __init__(self, base: nn.Module, state_a: Mapping, state_b: Mapping, control: Mapping[str, torch.Tensor]):
        super().__init__()
        self.base = base
        self.ends = ({k: v.clone() for k, v in state_a.items()}, {k: v.clone() for k, v in state_b.items()})
        self.names = [k for k, v in state_a.items() if v.is_floating_point() and k in control]
        self.control = nn.ParameterList([nn.Parameter(control[k].clone()) for k in self.names])
        self.t = 0.5

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        a, b = self.ends
        t = self.t
        state = {k: v for k, v in a.items() if k not in self.names}
        for name, ctrl in zip(self.names, self.control):
            state[name] = (1 - t) ** 2 * a[name] + 2 * t * (1 - t) * ctrl + t ** 2 * b[name]
        return torch.func.functional_call(self.base, state, args, kwargs, strict=False)


def fit_bezier(modelpool: Any, state_a: Mapping, state_b: Mapping, task: str, *, steps: int = 300,
               lr: float = 1e-3, batch_size: int = 128, examples: int | None = None, seed: int = 0) -> dict:
    """Train the control point ``θ_C`` of a quadratic Bézier curve from A to B on ``task``'s labelled training data.

    Parameters take the path; buffers (BatchNorm statistics) are A's during training (BatchNorm
    layers normalise with batch statistics in train mode) and re-estimated when the curve is scored.
    """
    base = modelpool.build_model(dict(state_a))
    params = {k for k, _ in base.named_parameters()}
    mid = {k: (state_a[k] + state_b[k]) / 2 for k in params}
    curve = _CurveModel(base, state_a, state_b, mid)
    curve.train()
    base.train()
    optimiser = torch.optim.Adam(curve.control.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    request = DataRequest(split="train", examples=examples, labelled=True)
    data = list(modelpool.batches(task, request, batch_size=batch_size))
    for step in range(steps):
        inputs, labels = data[step % len(data)]
        curve.t = float(torch.rand((), generator=gen))
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(modelpool.logits(task, curve, inputs), labels)
        loss.backward()
        optimiser.step()
    return {name: p.detach().clone() for name, p in zip(curve.names, curve.control)}


def bezier_point(state_a: Mapping, state_b: Mapping, control: Mapping, t: float) -> dict:
    """The state at ``t`` on the curve (buffers and tensors without a control point: the linear path)."""
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if not a.is_floating_point():
            out[key] = a.clone()
        elif key in control:
            out[key] = (1 - t) ** 2 * a + 2 * t * (1 - t) * control[key] + t ** 2 * b
        else:
            out[key] = (1 - t) * a + t * b
    return out


def curve_path(modelpool: Any, state_a: Mapping, state_b: Mapping, control: Mapping, task: str, *,
               points: int = 25, **score: Any) -> dict[str, Any]:
    """Loss, accuracy and error along the Bézier curve at ``points`` values of ``t``, and its barriers."""
    K = points - 1
    ts = [k / K for k in range(points)]
    rows = []
    for k, t in enumerate(ts):
        state = state_a if k == 0 else state_b if k == K else bezier_point(state_a, state_b, control, t)
        rows.append(score_state(modelpool, state, task, **score))
    return _path(ts, rows)
