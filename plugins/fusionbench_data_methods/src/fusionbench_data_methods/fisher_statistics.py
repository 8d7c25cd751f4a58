"""Diagonal Fisher information of a backbone on its task, and the Fisher-weighted average.

Two statistics are offered. ``exact`` (the default) is the diagonal Fisher of Matena and Raffel:
the mean over examples of the squared gradient of one example's log-likelihood. ``upstream`` is the
term upstream FusionBench takes from MergeLM: per batch of ``B`` examples, the gradient of
``Σ_b Σ_c √p_bc · log p_bc`` (``p`` the model's detached softmax), squared, summed over the batches
and divided by the number of examples. It is not the Fisher (the square of a sum over examples and
classes is not a sum of squares) and it depends on the batch size; it is offered to reproduce
upstream's numbers.

Fishers are keyed by the pool's tensor names (the naming contract of :mod:`fusionbench_core.naming`),
one entry for every floating parameter of the model.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fusionbench_core.errors import ConfigError
from fusionbench_core.naming import tensor_naming

from .data_access import CostMeter, batch_length, check_differentiable
from .linear_statistics import accumulation_dtype

STATISTICS = ("exact", "upstream")
"""``exact``: per-example squared gradients of log p(y|x); ``upstream``: MergeLM's batched √p·log p term."""


def diagonal_fisher(modelpool: Any, name: str, batches: Sequence[tuple[Any, Any]], *, empirical: bool, seed: int,
                    meter: CostMeter, method: str, statistic: str = "exact",
                    keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The diagonal statistic of model ``name`` over ``batches``, for every floating parameter, by pool key.

    ``exact``: the mean over examples of ``(∇ log p(y|x))²``; ``y`` is the gold label (``empirical``)
    or drawn from ``softmax`` of the model's logits with a generator seeded by ``seed`` and ``name``.
    The log-likelihood is summed over a batch, so ``batches`` must hold one example each (else it is
    an error). ``upstream``: the module docstring's batched term, labels unused. ``keys`` are the
    pool's tensor names (default: those of ``modelpool.tensors(name)``).
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown Fisher statistic '{statistic}'; choose one of {', '.join(STATISTICS)}")
    model = modelpool.load_model(name)
    model.eval()
    naming = tensor_naming(modelpool, model, modelpool.tensors(name).keys() if keys is None else keys)
    params = {naming.key(key): p for key, p in model.named_parameters() if p.is_floating_point()}
    for p in params.values():
        p.requires_grad_(True)
    totals = {key: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype)) for key, p in params.items()}
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    count = 0
    for inputs, labels in batches:
        n = batch_length(inputs)
        if statistic == "exact" and n != 1:
            raise ConfigError(f"the exact Fisher takes one example per backward pass, got a batch of {n}")
        model.zero_grad(set_to_none=True)
        logits = modelpool.logits(name, model, inputs)
        check_differentiable(logits, modelpool, method)
        log_probs = torch.log_softmax(logits.to(accumulation_dtype(logits.dtype)), dim=-1)
        if statistic == "upstream":
            objective = (log_probs.detach().exp().sqrt() * log_probs).sum()
        else:
            if empirical:
                if labels is None:
                    raise ConfigError(f"model pool '{modelpool.name}' gave no labels for task '{name}' "
                                      "(empirical Fisher)")
                targets = torch.as_tensor(labels, device=log_probs.device).reshape(-1)
            else:
                probs = log_probs.detach().exp().cpu()
                targets = torch.multinomial(probs, 1, generator=generator).reshape(-1).to(log_probs.device)
            objective = log_probs.gather(-1, targets[:, None]).sum()
        objective.backward()
        meter.forward_passes += n
        meter.backward_passes += n
        count += n
        for key, p in params.items():
            if p.grad is not None:
                totals[key].add_(p.grad.detach().to(totals[key].dtype).square())
    if count == 0:
        raise ConfigError(f"model pool '{modelpool.name}' gave no examples for task '{name}'")
    return {key: total / count for key, total in totals.items()}


def merge_weights(weights: list[float] | None, count: int, method: str) -> list[float]:
    """The λ_i of a merge: equal when None; must be ``count`` non-negative numbers with a positive sum."""
    if weights is None:
        return [1.0] * count
    if len(weights) != count:
        raise ConfigError(f"hyperparameter '{method}.model_weights' has {len(weights)} entries for {count} models")
    values = [float(w) for w in weights]
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise ConfigError(f"hyperparameter '{method}.model_weights' must be non-negative with a positive sum")
    return values


def fisher_weighted_state(sources: Sequence[Any], keys: Sequence[str], fishers: Sequence[Mapping[str, torch.Tensor]],
                          weights: Sequence[float], *, normalize: bool = False,
                          min_fisher: float = 0.0) -> dict[str, torch.Tensor]:
    """``Σ λ_i s_i (F_i + ε) θ_i / Σ λ_i s_i (F_i + ε)`` per tensor, with ``ε = min_fisher``.

    ``s_i = 1 / (‖F_i‖ + ε)`` with ``normalize`` (``‖F_i‖`` the L2 norm over all of model ``i``'s
    Fisher; 1 when both are 0), else 1. Where the denominator is exactly 0 (no example moves the
    parameter, ``ε = 0``) the λ-weighted mean is used. Tensors that are no model's parameter (buffers)
    have no Fisher in any model and get the λ-weighted mean; a Fisher that names a tensor the models
    lack, or a tensor with a Fisher in some models only, is an error.
    """
    key_set = set(keys)
    for index, fisher in enumerate(fishers):
        stray = next((key for key in fisher if key not in key_set), None)
        if stray is not None:
            raise ConfigError(f"the Fisher of model {index} names tensor '{stray}', which the models lack")
    scales = [1.0] * len(fishers)
    if normalize:
        scales = []
        for fisher in fishers:
            norm = torch.sqrt(sum(fisher[k].double().square().sum() for k in fisher)).item()
            scales.append(1.0 / (norm + min_fisher) if norm + min_fisher > 0 else 1.0)
    total_weight = sum(weights)
    state: dict[str, torch.Tensor] = {}
    for key in keys:
        first = sources[0].get(key)
        if not first.is_floating_point():
            state[key] = first
            continue
        work = accumulation_dtype(first.dtype)
        thetas = [first.to(work)] + [source.get(key).to(work) for source in sources[1:]]
        average = sum(w * t for w, t in zip(weights, thetas, strict=True)) / total_weight
        holders = sum(key in fisher for fisher in fishers)
        if holders == 0:
            state[key] = average.to(first.dtype)
            continue
        if holders < len(fishers):
            missing = next(i for i, fisher in enumerate(fishers) if key not in fisher)
            raise ConfigError(f"tensor '{key}' has a Fisher in some models but not in model {missing}")
        numerator = torch.zeros_like(average)
        denominator = torch.zeros_like(average)
        for w, s, fisher, theta in zip(weights, scales, fishers, thetas, strict=True):
            f = (fisher[key].to(work) + min_fisher) * (w * s)
            numerator.add_(f * theta)
            denominator.add_(f)
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        state[key] = torch.where(denominator > 0, numerator / safe, average).to(first.dtype)
    return state
