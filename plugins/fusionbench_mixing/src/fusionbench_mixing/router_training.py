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
from fusionbench_data_methods.coefficient_merger import minimise_entropy
from fusionbench_data_methods.data_access import CostMeter


def train_routers(pool: Any, model: nn.Module, routers: list[nn.Module], request: DataRequest, *, steps: int,
                  lr: float, batch_size: int, device: torch.device, meter: CostMeter, method: str) -> None:
    """``steps`` Adam steps on the routers of ``model`` (on ``device``); counts passes and examples in ``meter``."""
    model.requires_grad_(False)
    parameters = [p for router in routers for p in router.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    minimise_entropy(pool, model, parameters, list(pool.model_names), request, steps=steps, lr=lr,
                     batch_size=batch_size, meter=meter, method=method, description=f"{method}: router training",
                     device=device)
    model.requires_grad_(False)
