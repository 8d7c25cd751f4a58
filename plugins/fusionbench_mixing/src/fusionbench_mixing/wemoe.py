"""WEMoE (Tang et al., ICML 2024): weight-ensembling MoE, MLP weights routed per input over the task vectors."""

from __future__ import annotations

from fusionbench_core import DataRequest, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import SCALING_FACTOR, router_training, upscaled_mlps
from .mixing_base import MixingAlgorithm


class WeightEnsemblingMoE(MixingAlgorithm):
    """Task arithmetic outside the MLPs; each up-scaled MLP computes with ``θ₀ + Σ_i r_i(x) τ_i``.

    Parameters outside the up-scaled MLPs are ``θ₀ + λ Σ_i τ_i`` (λ = ``scaling_factor``, 0.3). Each
    up-scaled MLP gets a router on the hidden states entering it (two linear layers with a ReLU, as
    upstream; outputs averaged over token positions), whose output bias starts at ``init_lambda`` (0.3),
    so an untrained router with ``router_init_std=0`` gives exactly the task-arithmetic MLP. The routers
    alone are then trained by test-time entropy minimisation on unlabelled test inputs of every task,
    by default with upstream's protocol: 1000 Adam steps at learning rate 1e-4, 16 inputs per task a step.
    """

    name = "wemoe"
    requirement = Requirement.TEST_TIME
    needs = (Capability.PRETRAINED, Capability.ARCHITECTURE, Capability.LINEAR_MODULES)
    data = DataRequest(split="test", examples=None, labelled=False)
    hyperparameters = (SCALING_FACTOR, upscaled_mlps(), *router_training())

    def prepare_task_vectors(self, vectors):
        """The task vectors the experts use (WEMoE: as they are)."""
        return vectors

    def run(self, modelpool):
        """Merge by task arithmetic, put the routed MLPs in place, train their routers."""
        import zlib
        from fnmatch import fnmatch

        import torch

        from fusionbench_core import PRETRAINED
        from fusionbench_core.protocols import architecture_of, require_pretrained
        from fusionbench_data_methods.data_access import CostMeter, request_with, require_data_pool, resolve_device

        from .backbone import input_width, mlp_names, module_deltas, replace, task_arithmetic_backbone
        from .modules import Router, WeightEnsemblingMLP
        from .router_training import train_routers

        pool = require_data_pool(modelpool, self.name)
        require_pretrained(pool, self.name)
        spec = architecture_of(pool, self.name)
        device = resolve_device(self.device)
        model = task_arithmetic_backbone(pool, self.scaling_factor)
        base = pool.load_model(PRETRAINED)
        names = [n for n in mlp_names(base, spec, self.name, pool.name)
                 if not self.mlps or any(fnmatch(n, pattern) for pattern in self.mlps)]
        deltas = module_deltas(pool, base, names)
        experts = len(pool.model_names)
        routers = []
        for name in names:
            mlp = base.get_submodule(name)
            width = input_width(mlp, spec, self.name, name)
            dtype = next(mlp.parameters()).dtype
            router = Router(width, experts, width if self.router_hidden is None else self.router_hidden, dtype)
            router.reset(torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode())),
                         self.init_lambda, self.router_init_std)
            routers.append(router)
            replace(model, name, WeightEnsemblingMLP(mlp, self.prepare_task_vectors(deltas[name]), router,
                                                     batch_reduce=self.batch_reduce))
        del deltas
        model.to(device).eval()
        meter = CostMeter()
        train_routers(pool, model, routers, request_with(self.data, examples=self.examples), steps=self.steps,
                      lr=self.lr, batch_size=self.batch_size, device=device, meter=meter, method=self.name)
        return self.finish(pool, model, meter, upscaled_mlps=len(names), experts=experts, adaptation_steps=self.steps,
                           router_parameters=sum(p.numel() for r in routers for p in r.parameters()))


@hookimpl
def register_methods(register):
    """Register ``wemoe``."""
    register("wemoe", "fusionbench_mixing.wemoe:WeightEnsemblingMoE", aliases=("weight_ensembling_moe", "we_moe"),
             summary="WEMoE: task arithmetic + MLPs routed per input over the task vectors "
                     "(routers trained at test time)",
             requirement="test-time")
