"""SMILE (Tang et al. 2024): training-free sparse mixture of low-rank experts, one expert per fine-tuned model."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.protocols import Capability

from .mixing_base import MixingAlgorithm


class SmileUpscaling(MixingAlgorithm):
    """Every linear layer of the layer stack becomes a :class:`~fusionbench_mixing.modules.SmileLinear`.

    Per layer, ``ΔW_i = W_i − W₀ = U_i S_i V_iᵀ``; expert ``i`` is its rank-``expert_rank`` truncation plus
    ``Δb_i``. The router logit of expert ``i`` is ``‖V_i[:, :gate_rank]ᵀ x‖₂``; the softmax over experts keeps
    its ``top_k`` largest, renormalised: ``y = W₀x + b₀ + Σ_{top-K} p_i (U_i^k S_i^k V_i^kᵀ x + Δb_i)``.
    Everything outside the linear layers keeps the pretrained values. A rank above ``min(out, in)`` is
    capped there (full rank: the expert is ``ΔW_i`` itself).
    """

    name = "smile"
    requirement = Requirement.DATA_FREE
    needs = (Capability.PRETRAINED, Capability.ARCHITECTURE, Capability.LINEAR_MODULES)
    hyperparameters = (
        Hyperparameter("gate_rank", int, 1,
                       "k_g: singular vectors per expert the router projects on (upstream's image example: 16)",
                       minimum=1),
        Hyperparameter("expert_rank", int, 128, "k: rank of each expert (upstream's image example: 32)", minimum=1),
        Hyperparameter("top_k", int, 1, "K: experts used per input position", minimum=1),
    )

    def run(self, modelpool):
        """Decompose every linear layer's task vectors and put the SMILE layers in place."""
        import torch

        from fusionbench_core import PRETRAINED
        from fusionbench_core.protocols import architecture_of, require_pretrained
        from fusionbench_data_methods.data_access import CostMeter

        from .backbone import compute_dtype, linear_names, module_deltas, replace
        from .modules import SmileLinear

        require_pretrained(modelpool, self.name)
        spec = architecture_of(modelpool, self.name)
        model = modelpool.load_model(PRETRAINED)
        names = linear_names(model, spec, self.name, modelpool.name)
        deltas = module_deltas(modelpool, model, names)
        experts = len(modelpool.model_names)
        for name in names:
            linear = model.get_submodule(name)
            out_features, in_features = linear.weight.shape
            rank = min(self.expert_rank, out_features, in_features)
            gate_rank = min(self.gate_rank, out_features, in_features)
            dtype = linear.weight.dtype
            smile = SmileLinear(in_features, out_features, experts, rank, gate_rank, min(self.top_k, experts),
                                linear.bias is not None, dtype)
            with torch.no_grad():
                smile.weight.copy_(linear.weight)
                if linear.bias is not None:
                    smile.bias.copy_(linear.bias)
                    smile.expert_bias.copy_(deltas[name]["bias"])
                for i, delta in enumerate(deltas[name]["weight"]):
                    u, s, vh = torch.linalg.svd(delta.to(compute_dtype(dtype)), full_matrices=False)
                    smile.expert_u[i].copy_(u[:, :rank] * s[:rank])
                    smile.expert_v[i].copy_(vh[:rank])
                    smile.gate[i * gate_rank:(i + 1) * gate_rank].copy_(vh[:gate_rank])
            replace(model, name, smile)
        return self.finish(modelpool, model, CostMeter(), upscaled_linear_layers=len(names), experts=experts,
                           adaptation_steps=0)


@hookimpl
def register_methods(register):
    """Register ``smile``."""
    register("smile", "fusionbench_mixing.smile:SmileUpscaling", aliases=("smile_upscaling",),
             summary="SMILE: low-rank SVD experts of the task vectors per linear layer, top-K routed (no training)",
             requirement="data-free")
