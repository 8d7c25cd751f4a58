"""MoE up-cycling, Mixtral style: every MLP becomes a top-k routed mixture of MLP experts."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from ._params import SCALING_FACTOR, upscaled_mlps
from .mixing_base import MixingAlgorithm

FINETUNED = "finetuned"


class MoEUpcycling(MixingAlgorithm):
    """Each MLP becomes an :class:`~fusionbench_mixing.modules.UpcycledMoE` of ``E`` experts with a top-k router.

    The experts are the fine-tuned models' MLPs (``experts_from=finetuned``, ``E`` = number of models) or
    ``num_experts`` copies of one model's MLP (``experts_from=<model name>``, e.g. ``_pretrained_``). The
    router (``in → E``, no bias) is drawn from N(0, ``router_init_std``²), seeded; routing is per position:
    softmax, keep the top ``top_k``, renormalise. Everything outside the MLPs (attention, norms, embeddings)
    is merged by task arithmetic (``scaling_factor``). Up-cycling starts continued training (Mixtral, sparse
    up-cycling); this method only builds the model, which the benchmark scores as built.
    """

    name = "moe_upcycling"
    requirement = Requirement.TRAINING
    needs = (Capability.PRETRAINED, Capability.ARCHITECTURE, Capability.LINEAR_MODULES)
    hyperparameters = (
        Hyperparameter("experts_from", str, FINETUNED,
                       "'finetuned' (one expert per fine-tuned model) or a model name whose MLP is copied"),
        Hyperparameter("num_experts", int, 4, "Copies of the MLP when experts_from names a model (upstream: 4)",
                       minimum=1),
        Hyperparameter("top_k", int, 2, "Experts per position (Mixtral: 2)", minimum=1),
        Hyperparameter("router_init_std", float, 0.02, "Std of the router's initial weights", minimum=0.0),
        SCALING_FACTOR,
        upscaled_mlps(),
    )

    def run(self, modelpool):
        """Merge by task arithmetic and put the mixtures of MLP experts in place."""
        import copy
        import zlib
        from fnmatch import fnmatch

        import torch

        from fusionbench_core import PRETRAINED
        from fusionbench_core.errors import UnknownComponentError
        from fusionbench_core.protocols import architecture_of
        from fusionbench_data_methods.data_access import CostMeter

        from .backbone import input_width, mlp_names, replace, task_arithmetic_backbone
        from .modules import UpcycledMoE

        spec = architecture_of(modelpool, self.name)
        known = ([PRETRAINED] if modelpool.has_pretrained else []) + list(modelpool.model_names)
        if self.experts_from != FINETUNED and self.experts_from not in known:
            raise UnknownComponentError("model", self.experts_from, [FINETUNED, *known],
                                        owner=f"hyperparameter '{self.name}.experts_from'")
        model = task_arithmetic_backbone(modelpool, self.scaling_factor)
        names = [n for n in mlp_names(model, spec, self.name, modelpool.name)
                 if not self.mlps or any(fnmatch(n, pattern) for pattern in self.mlps)]
        sources = list(modelpool.model_names) if self.experts_from == FINETUNED else [self.experts_from]
        experts: dict[str, list[torch.nn.Module]] = {name: [] for name in names}
        for source in sources:
            loaded = modelpool.load_model(source)
            copies = 1 if self.experts_from == FINETUNED else self.num_experts
            for name in names:
                experts[name].extend(copy.deepcopy(loaded.get_submodule(name)) for _ in range(copies))
            del loaded
        count = len(sources) if self.experts_from == FINETUNED else self.num_experts
        top_k = min(self.top_k, count)
        for name in names:
            width = input_width(experts[name][0], spec, self.name, name)
            dtype = next(experts[name][0].parameters()).dtype
            moe = UpcycledMoE(experts[name], width, top_k, dtype)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
            with torch.no_grad():
                moe.router.weight.copy_(torch.randn(moe.router.weight.shape, generator=generator,
                                                    dtype=torch.float64) * self.router_init_std)
            replace(model, name, moe)
        return self.finish(modelpool, model, CostMeter(), upscaled_mlps=len(names), experts=count, top_k=top_k,
                           adaptation_steps=0)


@hookimpl
def register_methods(register):
    """Register ``moe_upcycling``."""
    register("moe_upcycling", "fusionbench_mixing.moe_upcycling:MoEUpcycling", aliases=("mixtral_moe_upscaling",),
             summary="MoE up-cycling (Mixtral style): MLPs → top-k routed experts; "
                     "meant for continued training, scored as built",
             requirement="training")
