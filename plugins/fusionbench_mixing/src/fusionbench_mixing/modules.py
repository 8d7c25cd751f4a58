"""The mixture layers the mixing methods put into a backbone.

Each is a :class:`MixingModule`: it names its ``kind``, describes itself with :meth:`~MixingModule.config`
(JSON) and is rebuilt, untrained, by :meth:`~MixingModule.from_config` from that description and the
pretrained module it replaced; the saved weights then fill it (see :mod:`.structure`).

- :class:`SmileLinear`: SMILE's linear layer, ``W₀x + b₀ + Σ_{top-K} p_i (U_i S_i V_iᵀ x + Δb_i)``.
- :class:`WeightEnsemblingMLP`: WEMoE's MLP, parameters ``θ₀ + Σ_i r_i(x) τ_i`` per input.
- :class:`RankOneMLP`: RankOne-MoE's MLP, 2-D parameters ``W + Σ_j r_j(x) σ_j u_j v_jᵀ`` per input.
- :class:`UpcycledMoE`: a Mixtral-style sparse MoE of MLP experts with a top-k router.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call, vmap


class MixingModule(nn.Module):
    """A mixture layer that can describe itself (:meth:`config`) and be rebuilt from that description."""

    kind: ClassVar[str] = ""

    def config(self) -> dict[str, Any]:
        """JSON-ready constructor settings (shapes, counts, dtype), enough to rebuild an untrained copy."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any], template: nn.Module) -> MixingModule:
        """An untrained module of ``config``; ``template`` is the pretrained module it replaces."""
        raise NotImplementedError


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def dtype_of(name: str) -> torch.dtype:
    """``"float32"`` → ``torch.float32``."""
    return getattr(torch, name)


def keep_top_k(weights: torch.Tensor, k: int, *, renormalise: bool) -> torch.Tensor:
    """``weights`` with all but the ``k`` largest of the last dimension zeroed (``k`` ≤ 0 or ≥ size: all kept)."""
    if k <= 0 or k >= weights.shape[-1]:
        return weights / weights.sum(dim=-1, keepdim=True) if renormalise else weights
    values, index = weights.topk(k, dim=-1)
    if renormalise:
        values = values / values.sum(dim=-1, keepdim=True)
    return torch.zeros_like(weights).scatter(-1, index, values)


class SmileLinear(MixingModule):
    """SMILE's linear layer: the pretrained ``W₀, b₀`` plus low-rank experts, one per fine-tuned model.

    Expert ``i`` is the rank-``rank`` truncation ``U_i S_i V_iᵀ`` of ``ΔW_i = W_i − W₀`` (plus ``Δb_i``);
    its router logit is ``‖V_i[:, :gate_rank]ᵀ x‖₂``; the softmax over experts keeps its ``top_k`` largest,
    renormalised. Stored: ``expert_u`` = ``U_i S_i`` ``(E, out, rank)``, ``expert_v`` = ``V_iᵀ`` ``(E, rank, in)``,
    ``gate`` ``(E·gate_rank, in)``.
    """

    kind = "smile_linear"

    def __init__(self, in_features: int, out_features: int, experts: int, rank: int, gate_rank: int, top_k: int,
                 bias: bool, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.experts, self.rank, self.gate_rank, self.top_k = experts, rank, gate_rank, top_k
        kw = {"dtype": dtype}
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, **kw), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, **kw), requires_grad=False) if bias else None
        self.gate = nn.Parameter(torch.zeros(experts * gate_rank, in_features, **kw), requires_grad=False)
        self.expert_u = nn.Parameter(torch.zeros(experts, out_features, rank, **kw), requires_grad=False)
        self.expert_v = nn.Parameter(torch.zeros(experts, rank, in_features, **kw), requires_grad=False)
        self.expert_bias = nn.Parameter(torch.zeros(experts, out_features, **kw), requires_grad=False) if bias else None

    def config(self) -> dict[str, Any]:
        """Shapes, counts, ranks, top-K, bias and dtype."""
        return {"in_features": self.in_features, "out_features": self.out_features, "experts": self.experts,
                "rank": self.rank, "gate_rank": self.gate_rank, "top_k": self.top_k, "bias": self.bias is not None,
                "dtype": dtype_name(self.weight.dtype)}

    @classmethod
    def from_config(cls, config: dict[str, Any], template: nn.Module) -> SmileLinear:
        """Zero-filled, of ``config``'s shapes."""
        return cls(config["in_features"], config["out_features"], config["experts"], config["rank"],
                   config["gate_rank"], config["top_k"], config["bias"], dtype_of(config["dtype"]))

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., E)``: softmax of the gate norms, top-K kept and renormalised."""
        projections = nn.functional.linear(x, self.gate).unflatten(-1, (self.experts, self.gate_rank))
        probabilities = torch.softmax(projections.norm(dim=-1), dim=-1)
        return keep_top_k(probabilities, self.top_k, renormalise=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``W₀x + b₀ + Σ_i p_i(x) (U_i S_i V_iᵀ x + Δb_i)``."""
        weights = self.routing_weights(x)
        expert_out = torch.einsum("...er,eor->...eo", torch.einsum("...i,eri->...er", x, self.expert_v), self.expert_u)
        if self.expert_bias is not None:
            expert_out = expert_out + self.expert_bias
        return nn.functional.linear(x, self.weight, self.bias) + (weights.unsqueeze(-1) * expert_out).sum(dim=-2)


class Router(nn.Module):
    """A router on hidden states: one linear layer, or two with a ReLU between (``hidden`` > 0)."""

    def __init__(self, in_features: int, experts: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.experts, self.hidden = in_features, experts, hidden
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_features, hidden, dtype=dtype), nn.ReLU(),
                                     nn.Linear(hidden, experts, dtype=dtype))
        else:
            self.net = nn.Sequential(nn.Linear(in_features, experts, dtype=dtype))

    def reset(self, generator: torch.Generator, init: float, std: float) -> None:
        """Weights ~ N(0, std²) (seeded), hidden biases 0, output biases ``init`` (std 0: ``init`` for any input)."""
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64) * std)
                    layer.bias.zero_()
            self.net[-1].bias.fill_(init)

    def config(self) -> dict[str, Any]:
        """Widths and count of outputs."""
        return {"in_features": self.in_features, "experts": self.experts, "hidden": self.hidden}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One weight per expert for every position of ``x``."""
        return self.net(x)


class RoutedMLP(MixingModule):
    """An MLP whose parameters are computed per input from a router's weights (WEMoE, RankOne-MoE).

    The router sees the hidden states entering the MLP and its outputs are averaged over the token
    positions, giving one weight vector per example (``batch_reduce``: one per batch). The MLP then runs
    on each example with that example's :meth:`merged` parameters (:func:`torch.func.functional_call`
    under :func:`torch.func.vmap`); only the router trains. Extra arguments of the MLP (a residual input)
    must be batched like the hidden states.
    """

    def __init__(self, base: nn.Module, router: Router, top_k: int, batch_reduce: bool):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.router = router
        self.top_k, self.batch_reduce = top_k, batch_reduce

    def merged(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The MLP's parameters ``(B, *shape)`` for router weights ``(B, E)``."""
        raise NotImplementedError

    def routing_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, E)`` (``(1, E)`` with ``batch_reduce``): router outputs averaged over token positions."""
        weights = self.router(hidden.to(self.router.net[0].weight.dtype))
        if weights.dim() > 2:
            weights = weights.mean(dim=tuple(range(1, weights.dim() - 1)))
        if self.batch_reduce:
            weights = weights.mean(dim=0, keepdim=True)
        return keep_top_k(weights, self.top_k, renormalise=False)

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The MLP on each example with that example's parameters."""
        params = self.merged(self.routing_weights(hidden))
        if next(iter(params.values())).shape[0] == 1:
            return functional_call(self.base, {k: v[0] for k, v in params.items()}, (hidden, *args), kwargs)

        def one(example_params, *example_inputs):
            inputs = tuple(x.unsqueeze(0) for x in example_inputs)
            return functional_call(self.base, example_params, inputs, kwargs).squeeze(0)

        return vmap(one)(params, hidden, *args)

    def routed_config(self) -> dict[str, Any]:
        """The settings every routed MLP has: router, top-k, batch reduction."""
        return {"router": self.router.config(), "top_k": self.top_k, "batch_reduce": self.batch_reduce,
                "dtype": dtype_name(self.router.net[0].weight.dtype)}


class WeightEnsemblingMLP(RoutedMLP):
    """WEMoE's MLP: every parameter is ``θ₀ + Σ_i r_i(x) τ_i`` with the task vectors ``τ_i`` of its MLP.

    ``task_vector_{j}`` buffers hold ``(E, *shape)`` for the MLP's ``j``-th parameter (``parameters`` order).
    """

    kind = "weight_ensembling_mlp"

    def __init__(self, base: nn.Module, task_vectors: dict[str, torch.Tensor], router: Router, top_k: int = 0,
                 batch_reduce: bool = False):
        super().__init__(base, router, top_k, batch_reduce)
        self.parameter_names = list(task_vectors)
        for j, name in enumerate(self.parameter_names):
            self.register_buffer(f"task_vector_{j}", task_vectors[name].contiguous())

    def merged(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``θ₀ + Σ_i w_i τ_i`` for every parameter, per row of ``weights``."""
        own = dict(self.base.named_parameters())
        return {name: own[name] + torch.tensordot(weights.to(own[name].dtype), getattr(self, f"task_vector_{j}"),
                                                  dims=1)
                for j, name in enumerate(self.parameter_names)}

    def config(self) -> dict[str, Any]:
        """Router, routing and the parameters the task vectors belong to."""
        return {**self.routed_config(), "parameters": self.parameter_names}

    @classmethod
    def from_config(cls, config: dict[str, Any], template: nn.Module) -> WeightEnsemblingMLP:
        """Zero task vectors of ``template``'s parameter shapes and an untrained router."""
        dtype = dtype_of(config["dtype"])
        own = dict(template.named_parameters())
        experts = config["router"]["experts"]
        vectors = {name: torch.zeros(experts, *own[name].shape, dtype=own[name].dtype) for name in config["parameters"]}
        router = Router(config["router"]["in_features"], experts, config["router"]["hidden"], dtype)
        return cls(copy.deepcopy(template), vectors, router, config["top_k"], config["batch_reduce"])


class RankOneMLP(RoutedMLP):
    """RankOne-MoE's MLP: each 2-D parameter is ``W + Σ_j r_j(x) u_j v_jᵀ`` over rank-one experts.

    ``u_{p}`` ``(E, out)`` (left singular vectors scaled by σ) and ``v_{p}`` ``(E, in)`` buffers hold the
    experts of the MLP's ``p``-th 2-D parameter; ``W`` (and every other parameter) is the base module's.
    """

    kind = "rank_one_mlp"

    def __init__(self, base: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], router: Router,
                 top_k: int = 0, batch_reduce: bool = False):
        super().__init__(base, router, top_k, batch_reduce)
        self.parameter_names = list(factors)
        for p, name in enumerate(self.parameter_names):
            u, v = factors[name]
            self.register_buffer(f"u_{p}", u.contiguous())
            self.register_buffer(f"v_{p}", v.contiguous())

    def merged(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``W + Σ_j w_j u_j v_jᵀ`` for every 2-D parameter, per row of ``weights``."""
        own = dict(self.base.named_parameters())
        out = {}
        for p, name in enumerate(self.parameter_names):
            u, v = getattr(self, f"u_{p}"), getattr(self, f"v_{p}")
            out[name] = own[name] + torch.einsum("be,eo,ei->boi", weights.to(u.dtype), u, v)
        return out

    def config(self) -> dict[str, Any]:
        """Router, routing and the 2-D parameters with experts."""
        return {**self.routed_config(), "parameters": self.parameter_names}

    @classmethod
    def from_config(cls, config: dict[str, Any], template: nn.Module) -> RankOneMLP:
        """Zero factors of ``template``'s parameter shapes and an untrained router."""
        dtype = dtype_of(config["dtype"])
        own = dict(template.named_parameters())
        experts = config["router"]["experts"]
        factors = {name: (torch.zeros(experts, own[name].shape[0], dtype=own[name].dtype),
                          torch.zeros(experts, own[name].shape[1], dtype=own[name].dtype))
                   for name in config["parameters"]}
        router = Router(config["router"]["in_features"], experts, config["router"]["hidden"], dtype)
        return cls(copy.deepcopy(template), factors, router, config["top_k"], config["batch_reduce"])


class UpcycledMoE(MixingModule):
    """A Mixtral-style sparse MoE: ``Σ_{top-k} softmax(router(x))_e · expert_e(x)``, renormalised over the top k.

    Routing is per position (token); every expert runs on every position and the unselected ones get
    weight 0, so the result does not depend on how positions are batched.
    """

    kind = "upcycled_moe"

    def __init__(self, experts: list[nn.Module], in_features: int, top_k: int, dtype: torch.dtype):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = nn.Linear(in_features, len(experts), bias=False, dtype=dtype)
        self.top_k = top_k

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The top-k experts' outputs weighted by their renormalised router probabilities."""
        weights = keep_top_k(torch.softmax(self.router(hidden), dim=-1), self.top_k, renormalise=True)
        outputs = torch.stack([expert(hidden, *args, **kwargs) for expert in self.experts], dim=-2)
        return (weights.unsqueeze(-1).to(outputs.dtype) * outputs).sum(dim=-2)

    def config(self) -> dict[str, Any]:
        """Experts, router width, top-k, dtype."""
        return {"experts": len(self.experts), "in_features": self.router.in_features, "top_k": self.top_k,
                "dtype": dtype_name(self.router.weight.dtype)}

    @classmethod
    def from_config(cls, config: dict[str, Any], template: nn.Module) -> UpcycledMoE:
        """``experts`` copies of ``template`` and an untrained router."""
        return cls([copy.deepcopy(template) for _ in range(config["experts"])], config["in_features"],
                   config["top_k"], dtype_of(config["dtype"]))


KINDS: dict[str, type[MixingModule]] = {
    cls.kind: cls for cls in (SmileLinear, WeightEnsemblingMLP, RankOneMLP, UpcycledMoE)
}
"""Every mixture layer by its ``kind``, for rebuilding saved models."""
