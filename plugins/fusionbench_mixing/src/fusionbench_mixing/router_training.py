"""Test-time training of routers: entropy minimisation on unlabelled test inputs, through the pool's data API.

As AdaMerging (:mod:`fusionbench_data_methods.coefficient_merger`): each step takes one batch of unlabelled
test inputs per task, scores the fused model with the task's head (``modelpool.logits``) and minimises the
sum over tasks of the mean prediction entropy with Adam. Only the routers' parameters train.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fusionbench_core import DataRequest
from fusionbench_core.progress import track
from fusionbench_data_methods.coefficient_merger import cycle_batches, entropy
from fusionbench_data_methods.data_access import CostMeter, batch_length, check_differentiable, move_to


def train_routers(pool: Any, model: nn.Module, routers: list[nn.Module], request: DataRequest, *, steps: int,
                  lr: float, batch_size: int, device: torch.device, meter: CostMeter, method: str) -> None:
    """``steps`` Adam steps on the routers of ``model`` (on ``device``); counts passes and examples in ``meter``."""
    model.requires_grad_(False)
    parameters = [p for router in routers for p in router.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    tasks = list(pool.model_names)
    streams = {task: cycle_batches(pool, task, request, batch_size) for task in tasks}
    seen = dict.fromkeys(tasks, 0)
    optimiser = torch.optim.Adam(parameters, lr=lr) if steps else None
    for _ in track(range(steps), f"{method}: router training"):
        optimiser.zero_grad(set_to_none=True)
        loss = None
        for task in tasks:
            inputs = next(streams[task])
            logits = pool.logits(task, model, move_to(inputs, device))
            check_differentiable(logits, pool, method)
            term = entropy(logits).mean()
            loss = term if loss is None else loss + term
            n = batch_length(inputs)
            seen[task] += n
            meter.forward_passes += n
            meter.backward_passes += n
        loss.backward()
        optimiser.step()
    if steps:
        sizes = {task: sum(batch_length(x) for x, _ in pool.batches(task, request, batch_size=batch_size))
                 for task in tasks}
        meter.examples = sum(min(count, sizes[task]) for task, count in seen.items())
    model.requires_grad_(False)
