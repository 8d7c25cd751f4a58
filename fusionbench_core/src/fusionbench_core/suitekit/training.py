"""Training and scoring under a frozen head: the loops every expert suite shares.

- :func:`train_under_head`: AdamW with warm-up then cosine decay (:func:`warmup_cosine`) over a
  seeded data order, the loss supplied per batch of indices;
- :func:`evaluate_head`: accuracy and cross-entropy of ``head(features(backbone, x))``
  (:func:`score_head`: with the per-example predictions);
- :func:`task_seed`: one seed per (seed, task), so experts do not depend on build order.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["evaluate_head", "move_to", "score_head", "task_seed", "train_under_head", "warmup_cosine"]


def task_seed(seed: int, task: str) -> int:
    """A per-(seed, task) seed, so experts do not depend on each other or on build order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}".encode()).digest()[:4], "little")


def move_to(inputs: Any, dev: torch.device) -> Any:
    """A tensor, or a mapping of tensors (tokenised text), on ``dev``."""
    if isinstance(inputs, Mapping):
        return {k: v.to(dev) for k, v in inputs.items()}
    return inputs.to(dev)


def warmup_cosine(total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over the first 10 % of ``total`` steps, then cosine to zero."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


def train_under_head(model: nn.Module, params: Iterable[nn.Parameter], n: int, step_loss: Callable[[torch.Tensor], torch.Tensor],
                     *, epochs: int, lr: float, batch: int, seed: int, description: str) -> float:
    """AdamW over ``params`` (warm-up then cosine decay), ``epochs`` passes over ``n`` examples; the last epoch's mean loss.

    ``step_loss(idx)`` returns the loss of the examples ``idx`` (a CPU index tensor, one batch of
    a fresh random order per epoch). The order comes from a generator seeded by ``seed`` alone,
    so the result does not depend on anything trained before it (what makes a resumed build
    reproduce a full one). ``model`` is in train mode during the loop and in eval mode after it.
    """
    from fusionbench_core.progress import track

    per_epoch = math.ceil(n / batch)
    total = per_epoch * epochs
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(total))
    model.train()
    epoch_loss, order = 0.0, None
    for step in track(range(total), description):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(n, generator=gen)
            epoch_loss = 0.0
        loss = step_loss(order[position * batch : (position + 1) * batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        epoch_loss += float(loss.detach()) / per_epoch
    model.eval()
    return epoch_loss


def evaluate_head(backbone: nn.Module, head: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]],
                  features: Callable[[nn.Module, Any], torch.Tensor]) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(features(backbone, inputs))`` over ``batches``.

    ``batches`` yields ``(inputs, labels)`` already on the backbone's device; it is consumed in
    inference mode. Scores through :func:`fusionbench_core.protocols.task_logits`, so an ensemble
    that combines its members after the head (a predictor) is scored by its own rule.
    """
    return score_head(backbone, head, batches, features)[0]


def score_head(backbone: nn.Module, head: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]],
               features: Callable[[nn.Module, Any], torch.Tensor]) -> tuple[dict[str, float], Any]:
    """:func:`evaluate_head` and the per-example predictions: ``(metrics, Predictions)``.

    The :class:`~fusionbench_core.protocols.Predictions` list the predicted class and the label of
    every example in the order ``batches`` yields them (a fixed order, so two runs pair up).
    """
    from fusionbench_core.protocols import Predictions, task_logits

    dev = next(backbone.parameters()).device
    # A copy: moving the caller's head inside inference mode would turn its weights into inference
    # tensors, which a later training step (AdaMerging through the pool's logits) cannot use.
    head = copy.deepcopy(head).to(dev)
    backbone.eval()
    correct, loss_sum, n = 0, 0.0, 0
    predicted, targets = [], []
    with torch.inference_mode():
        for inputs, y in batches:
            logits = task_logits(backbone, lambda member, x: head(features(member, x)), inputs).float()
            guess = logits.argmax(dim=1)
            correct += int((guess == y).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
            predicted.append(guess.cpu())
            targets.append(y.cpu())
    flat = (lambda parts: tuple(torch.cat(parts).tolist()) if parts else ())
    return ({"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)},
            Predictions(flat(predicted), flat(targets)))
