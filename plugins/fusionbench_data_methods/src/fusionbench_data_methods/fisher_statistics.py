"""Diagonal Fisher information of a backbone on its task, and the Fisher-weighted average."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fusionbench_core.errors import ConfigError

from .data_access import CostMeter, batch_length, check_differentiable
from .linear_statistics import accumulation_dtype


def diagonal_fisher(modelpool: Any, name: str, batches: Sequence[tuple[Any, Any]], *, empirical: bool, seed: int,
                    meter: CostMeter, method: str) -> dict[str, torch.Tensor]:
    """Mean over single-example ``batches`` of ``(∇ log p(y|x))²`` for every floating parameter of model ``name``.

    ``y`` is the gold label (``empirical``) or drawn from ``softmax`` of the model's logits with a
    generator seeded by ``seed`` and ``name``. The log-likelihood is summed over the batch, so with
    one example per batch each squared gradient is that example's.
    """
    model = modelpool.load_model(name)
    model.eval()
    params = {key: p for key, p in model.named_parameters() if p.is_floating_point()}
    for p in params.values():
        p.requires_grad_(True)
    totals = {key: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype)) for key, p in params.items()}
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    count = 0
    for inputs, labels in batches:
        model.zero_grad(set_to_none=True)
        logits = modelpool.logits(name, model, inputs)
        check_differentiable(logits, modelpool, method)
        log_probs = torch.log_softmax(logits.to(accumulation_dtype(logits.dtype)), dim=-1)
        if empirical:
            if labels is None:
                raise ConfigError(f"model pool '{modelpool.name}' gave no labels for task '{name}' (empirical Fisher)")
            targets = torch.as_tensor(labels, device=log_probs.device).reshape(-1)
        else:
            probs = log_probs.detach().exp().cpu()
            targets = torch.multinomial(probs, 1, generator=generator).reshape(-1).to(log_probs.device)
        log_probs.gather(-1, targets[:, None]).sum().backward()
        n = batch_length(inputs)
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
                          weights: Sequence[float], *, normalize: bool = False) -> dict[str, torch.Tensor]:
    """``Σ λ_i F_i θ_i / Σ λ_i F_i`` per tensor; the λ-weighted mean where the denominator is 0 or no Fisher exists."""
    scales = [1.0] * len(fishers)
    if normalize:
        scales = []
        for fisher in fishers:
            norm = torch.sqrt(sum(fisher[k].double().square().sum() for k in fisher)).item()
            scales.append(1.0 / norm if norm > 0 else 1.0)
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
        if all(key in fisher for fisher in fishers):
            numerator = torch.zeros_like(average)
            denominator = torch.zeros_like(average)
            for w, s, fisher, theta in zip(weights, scales, fishers, thetas, strict=True):
                f = fisher[key].to(work) * (w * s)
                numerator.add_(f * theta)
                denominator.add_(f)
            safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
            merged = torch.where(denominator > 0, numerator / safe, average)
        else:
            merged = average
        state[key] = merged.to(first.dtype)
    return state
