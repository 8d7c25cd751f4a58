"""RankOne-MoE: rank-one experts from the SVD of the task vectors, mixed per input by a learned router."""

from __future__ import annotations

from fusionbench_core import DataRequest, Hyperparameter, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import SCALING_FACTOR, router_training, upscaled_mlps
from .mixing_base import MixingAlgorithm


class RankOneMoE(MixingAlgorithm):
    """Each up-scaled MLP's matrices become ``W₀ + Σ_j r_j(x) σ_j u_j v_jᵀ`` over ``T·rank`` rank-one experts.

    For every 2-D parameter of an up-scaled MLP and every task ``i``, the top ``rank`` singular triplets of
    ``τ_i = U S Vᵀ`` are the experts (task-major order); ``rank`` is 32 as upstream's ``rank_k``. A router on
    the hidden states entering the MLP gives one weight per expert, of which the ``top_k`` largest are
    used (0: all). As upstream's (``router_hidden_layers: 1``), the router is one linear layer by
    default (``router_hidden=0``); a positive ``router_hidden`` gives WEMoE's two layers with a ReLU.
    With the output bias at ``init_lambda`` and ``router_init_std=0`` the MLP starts at task arithmetic
    over the rank-``rank`` truncated task vectors. The MLP's other parameters (biases, norms) and everything
    outside the MLPs are merged by task arithmetic (``scaling_factor``). The routers alone are trained by
    test-time entropy minimisation.
    """

    name = "rankone_moe"
    requirement = Requirement.TEST_TIME
    needs = (Capability.PRETRAINED, Capability.ARCHITECTURE, Capability.LINEAR_MODULES)
    data = DataRequest(split="test", examples=None, labelled=False)
    hyperparameters = (
        Hyperparameter("rank", int, 32, "Rank-one experts per task and matrix (the top singular triplets; "
                       "upstream: 32)", minimum=1),
        Hyperparameter("top_k", int, 0, "Experts used per example (0: all)", minimum=0),
        SCALING_FACTOR,
        upscaled_mlps(),
        *router_training(router_hidden=0, router_help="default 0, upstream's one-layer router"),
    )

    def run(self, modelpool):
        """Merge by task arithmetic, decompose the MLP task vectors, put the routed MLPs in place, train the routers."""
        import zlib
        from fnmatch import fnmatch

        import torch

        from fusionbench_core import PRETRAINED
        from fusionbench_core.errors import ConfigError
        from fusionbench_core.protocols import architecture_of, require_pretrained
        from fusionbench_data_methods.data_access import CostMeter, request_with, require_data_pool, resolve_device

        from .backbone import compute_dtype, input_width, mlp_names, module_deltas, replace, task_arithmetic_backbone
        from .modules import RankOneMLP, Router
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
        tasks = len(pool.model_names)
        routers = []
        for name in names:
            mlp = model.get_submodule(name)  # task arithmetic everywhere but its matrices, set back to θ₀ below
            pretrained = dict(base.get_submodule(name).named_parameters())
            matrices = {key: stack for key, stack in deltas[name].items() if stack.dim() == 3}
            if not matrices:
                raise ConfigError(f"method '{self.name}' cannot handle MLP '{name}': it holds no 2-D parameter")
            rank = min(self.rank, *(min(stack.shape[1:]) for stack in matrices.values()))
            factors = {}
            for key, stack in matrices.items():
                u_parts, v_parts = [], []
                for delta in stack:
                    u, s, vh = torch.linalg.svd(delta.to(compute_dtype(delta.dtype)), full_matrices=False)
                    u_parts.append((u[:, :rank] * s[:rank]).T.to(delta.dtype))
                    v_parts.append(vh[:rank].to(delta.dtype))
                factors[key] = (torch.cat(u_parts), torch.cat(v_parts))
                with torch.no_grad():
                    mlp.get_parameter(key).copy_(pretrained[key])
            experts = tasks * rank
            width = input_width(mlp, spec, self.name, name)
            dtype = next(mlp.parameters()).dtype
            router = Router(width, experts, width if self.router_hidden is None else self.router_hidden, dtype)
            router.reset(torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode())),
                         self.init_lambda, self.router_init_std)
            routers.append(router)
            replace(model, name, RankOneMLP(mlp, factors, router, top_k=self.top_k, batch_reduce=self.batch_reduce))
        del deltas
        model.to(device).eval()
        meter = CostMeter()
        train_routers(pool, model, routers, request_with(self.data, examples=self.examples), steps=self.steps,
                      lr=self.lr, batch_size=self.batch_size, device=device, meter=meter, method=self.name)
        return self.finish(pool, model, meter, upscaled_mlps=len(names), experts_per_mlp=experts,
                           adaptation_steps=self.steps,
                           router_parameters=sum(p.numel() for r in routers for p in r.parameters()))


@hookimpl
def register_methods(register):
    """Register ``rankone_moe``."""
    register("rankone_moe", "fusionbench_mixing.rankone_moe:RankOneMoE",
             summary="RankOne-MoE: rank-one SVD experts of the task vectors, routed per input "
                     "(router trained at test time)",
             requirement="test-time")
