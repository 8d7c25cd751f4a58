"""AdaMerging's method class, shared by the task-wise and layer-wise entry points.

The procedure (θ(λ) computed functionally, entropy minimisation, clamping) is described in
:mod:`.coefficient_merger`; this module imports torch only when a run starts.
"""

from __future__ import annotations

from typing import ClassVar

from fusionbench_core import BaseAlgorithm, DataRequest, Hyperparameter, Requirement
from fusionbench_core.protocols import Capability, require_pretrained

from ._params import batch_size, examples


class AdaMergingBase(BaseAlgorithm):
    """Learn merge coefficients λ by minimising prediction entropy on unlabelled test inputs.

    Subclasses set :attr:`layer_wise`. After the run, ``self.coefficients`` holds the learned λ as the
    merged model uses them (clamped with ``clamp=forward``; ``(tasks, 1)`` task-wise, ``(tasks,
    parameter tensors)`` layer-wise). ``clamp`` keeps λ in [0, 1] as the paper's released code does
    (``forward``, the default), by projection after every step (``project``) or not at all (``none``,
    upstream FusionBench's CLIP default); see :mod:`.coefficient_merger`. Runs on CUDA when present
    (``device=auto``); the pool's ``logits`` must then accept a backbone on that device.
    """

    layer_wise: ClassVar[bool] = False
    requirement = Requirement.TEST_TIME
    needs = (Capability.PRETRAINED,)
    data = DataRequest(split="test", examples=None, labelled=False)
    hyperparameters = (
        Hyperparameter("steps", int, 500, "Adam steps (official 500; FusionBench runs 1000)", minimum=0),
        Hyperparameter("lr", float, 1e-3, "Adam learning rate", minimum=0.0, minimum_exclusive=True),
        Hyperparameter("init_lambda", float, 0.3, "Initial λ (the task-arithmetic value)", minimum=0.0, maximum=1.0),
        Hyperparameter("clamp", str, "forward",
                       "Keep λ in [0, 1]: forward (clamp where θ(λ) is formed; the paper's code, upstream's "
                       "clamp_weights=true), project (set back after each step), none (upstream's CLIP default)",
                       choices=("forward", "project", "none")),
        batch_size(16, "Unlabelled test inputs per task per step"),
        examples(None, "Cap on test inputs per task (default: all)"),
        Hyperparameter("device", str, "auto", "auto (CUDA when present), cpu or cuda[:N]"),
    )

    def run(self, modelpool):
        """Learn λ, then build the pool's module at the learned λ."""
        from .coefficient_merger import build_merger, final_state, learn_coefficients
        from .data_access import CostMeter, request_with, require_data_pool, resolve_device

        pool = require_data_pool(modelpool, self.name)
        require_pretrained(pool, self.name)
        device = resolve_device(self.device)
        merger, tasks = build_merger(pool, device, self.layer_wise, self.init_lambda, self.clamp)
        meter = CostMeter()
        request = request_with(self.data, examples=self.examples)
        learn_coefficients(pool, merger, tasks, request, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                           meter=meter, method=self.name)
        meter.extra.update({"steps": self.steps, "coefficients": merger.coefficients.numel()})
        self.cost = meter.as_dict()
        self.coefficients = merger.effective_coefficients().detach().cpu()
        return pool.build_model(final_state(pool, merger, self.init_lambda))
