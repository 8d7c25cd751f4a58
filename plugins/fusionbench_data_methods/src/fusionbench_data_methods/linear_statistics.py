"""Gram matrices of every linear layer's inputs, and the two ways to merge with them.

For a linear layer ``y = x Wᵀ + b`` (PyTorch stores ``W`` as ``(out, in)``) the statistic is
``G = XᵀX / n`` over all ``n`` input rows (tokens × examples). RegMean solves, per layer,
``(Σ G̃_i) W*ᵀ = Σ G̃_i W_iᵀ`` in closed form with ``G̃ = αG + (1-α)·diag(G)``; MaTS approaches the
same system with a few conjugate-gradient steps from an initial merge.

Linear layers are ``nn.Linear`` and the input-major ``Conv1D`` layers of GPT and GPT-2, which compute
``y = x W + b`` with ``W`` stored ``(in, out)``; the solvers always see ``(out, in)`` weights, and an
input-major layer's weights are transposed on the way in and out.

A weight several modules share (a tied output head and input embedding, as in T5 checkpoints saved
with one ``shared.weight``) is one tensor of the pool, under its canonical name: it is merged once and
stays tied. Its regression objective sums over the linear layers that use it, so their Grams are added;
a use as an embedding adds no term.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fusionbench_core.errors import ConfigError
from fusionbench_core.naming import TensorNaming, tensor_naming
from fusionbench_core.progress import track
from fusionbench_core.protocols import check_same_keys

from .data_access import CostMeter, batch_length, request_with, require_data_pool
from .statistics_cache import StatisticsCache, data_fingerprint, model_fingerprint


def is_input_major(module: nn.Module) -> bool:
    """Whether ``module`` is a ``Conv1D``-style linear layer: ``y = x W + b`` with ``W`` stored ``(in, out)``.

    Recognised by shape, not by import: a 2-D ``weight`` whose second dimension is the module's ``nf``
    (output features), as in transformers' ``Conv1D`` (GPT, GPT-2).
    """
    weight = getattr(module, "weight", None)
    return (not isinstance(module, nn.Linear) and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and getattr(module, "nf", None) == weight.shape[1])


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer of ``model`` (``nn.Linear`` and subclasses, input-major ``Conv1D``), by qualified name."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Linear) or is_input_major(module)}


def as_out_in(tensor: torch.Tensor, input_major: bool) -> torch.Tensor:
    """A linear layer's weight in ``(out, in)`` layout (transposed when the layer stores it input-major)."""
    return tensor.T if input_major else tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Grams accumulate in float64 for float64 models and float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class GramCollector:
    """Forward pre-hooks that accumulate ``XᵀX`` and the row count of chosen linear layers' inputs.

    Use as a context manager; the hooks are removed on exit. :meth:`grams` returns ``XᵀX / n`` per layer.
    """

    def __init__(self, layers: Mapping[str, nn.Module]):
        self.layers = dict(layers)
        self.sums: dict[str, torch.Tensor] = {}
        self.rows: dict[str, int] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            rows = x.reshape(-1, x.shape[-1]).to(accumulation_dtype(x.dtype))
            gram = rows.T @ rows
            self.sums[name] = gram if name not in self.sums else self.sums[name].add_(gram)
            self.rows[name] = self.rows.get(name, 0) + rows.shape[0]

        return hook

    def __enter__(self) -> GramCollector:
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def grams(self) -> dict[str, torch.Tensor]:
        """``XᵀX / n`` of every layer that saw inputs (layers never called are left out)."""
        return {name: total / self.rows[name] for name, total in self.sums.items()}


def draw_batches(modelpool: Any, task: str, request: Any, batch_size: int) -> list[tuple[Any, Any]]:
    """All batches ``request`` yields for ``task``, materialised once (fingerprinted, then reused)."""
    return list(modelpool.batches(task, request, batch_size=batch_size))


def weight_layers(model: nn.Module, naming: TensorNaming) -> dict[str, list[str]]:
    """The pool's key of every linear layer's weight → the layers using it (several when the weight is tied)."""
    uses: dict[str, list[str]] = {}
    for layer in linear_layers(model):
        uses.setdefault(naming.key(weight_key(layer)), []).append(layer)
    return uses


def model_grams(modelpool: Any, name: str, keys: Sequence[str], batches: list[tuple[Any, Any]], meter: CostMeter,
                cache: StatisticsCache, *, settings: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """Gram matrices of model ``name``'s linear-layer inputs over ``batches`` of its task (cached), by weight key.

    Each Gram is stored under the pool's key of the layer's weight (``keys``, translated through
    :func:`fusionbench_core.naming.tensor_naming`), so cached statistics do not depend on how a
    library version names the loaded module; a weight tied between layers gets the sum of their
    Grams (its regression objective sums over them). Layers that never ran are left out.
    Forward passes go through ``modelpool.logits(name, model, inputs)``, so the pool decides how its
    backbone consumes its inputs; only the backbone's own layers are hooked.
    """
    data_key = data_fingerprint(batches)
    key = None if data_key is None else cache.key(statistic="linear-input-gram", model=model_fingerprint(
        modelpool.tensors(name)), data=data_key, **settings)

    def compute() -> dict[str, torch.Tensor]:
        model = modelpool.load_model(name)
        model.eval()
        uses = weight_layers(model, tensor_naming(modelpool, model, keys))
        if not uses:
            raise ConfigError(f"model '{name}' of pool '{modelpool.name}' has no linear layer (nn.Linear or Conv1D) "
                              "to take Grams of")
        layers = {layer: model.get_submodule(layer) for tied in uses.values() for layer in tied}
        with GramCollector(layers) as collector, torch.no_grad():
            for inputs, _ in batches:
                modelpool.logits(name, model, inputs)
                meter.forward_passes += batch_length(inputs)
        grams = collector.grams()
        out = {}
        for weight, tied in uses.items():
            ran = [grams[layer] for layer in tied if layer in grams]
            if ran:
                out[weight] = sum(ran[1:], ran[0])
        return out

    return cache.get_or_compute(key, compute)


def shrink_off_diagonal(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``αG + (1-α)·diag(G)``: off-diagonal entries scaled by α, the diagonal kept."""
    if alpha == 1.0:
        return gram
    return gram * alpha + torch.diag(torch.diagonal(gram)) * (1.0 - alpha)


def normal_equations(grams: Sequence[torch.Tensor], weights: Iterable[torch.Tensor], alpha: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A = Σ G̃_i``, ``B = Σ G̃_i W_iᵀ`` and the mean ``W̄ᵀ`` of the weights (all in ``(in, ·)`` layout)."""
    lhs = rhs = mean = None
    count = 0
    for gram, weight in zip(grams, weights, strict=True):
        shrunk = shrink_off_diagonal(gram.to(weight.dtype), alpha)
        term = shrunk @ weight.T
        lhs = shrunk.clone() if lhs is None else lhs.add_(shrunk)
        rhs = term if rhs is None else rhs.add_(term)
        mean = weight.T.clone() if mean is None else mean.add_(weight.T)
        count += 1
    return lhs, rhs, mean / count


def regmean_solve(grams: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """RegMean's closed form ``W* = ((Σ G̃_i)⁻¹ Σ G̃_i W_iᵀ)ᵀ`` for weights in PyTorch's ``(out, in)`` layout.

    When ``Σ G̃_i`` is singular (an input dimension no model ever activates) the least-squares solution
    closest to the plain average is taken: ``A⁺B + (I − A⁺A) W̄ᵀ``, so unconstrained directions keep
    the average instead of being zeroed.
    """
    lhs, rhs, mean = normal_equations(grams, weights, alpha)
    try:
        solution = torch.linalg.solve(lhs, rhs)
        if not torch.isfinite(solution).all():
            raise torch.linalg.LinAlgError("non-finite solution")
    except torch.linalg.LinAlgError:
        pinv = torch.linalg.pinv(lhs, hermitian=True)
        eye = torch.eye(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
        solution = pinv @ rhs + (eye - pinv @ lhs) @ mean
    return solution.T.contiguous()


def conjugate_gradient(lhs: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` conjugate-gradient steps on ``lhs X = rhs`` (``lhs`` symmetric PSD), column by column.

    All right-hand-side columns advance together; a column whose residual or search direction
    vanishes stops moving (its step size is set to 0) instead of dividing by zero.
    """
    x = start.clone()
    residual = rhs - lhs @ x
    direction = residual.clone()
    rs = (residual * residual).sum(dim=0)
    for _ in range(iterations):
        a_dir = lhs @ direction
        curvature = (direction * a_dir).sum(dim=0)
        step = torch.where(curvature > 0, rs / torch.where(curvature > 0, curvature, 1), torch.zeros_like(rs))
        x.add_(direction * step)
        residual.sub_(a_dir * step)
        rs_new = (residual * residual).sum(dim=0)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1), torch.zeros_like(rs))
        direction = residual + direction * beta
        rs = rs_new
    return x


def weight_key(layer: str) -> str:
    """The state-dict key of a linear layer's weight."""
    return f"{layer}.weight" if layer else "weight"


def merge_state(sources: Sequence[Any], keys: Sequence[str], solved: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A merged state dict: ``solved[key](tensors)`` where given, the mean of floating tensors otherwise.

    ``tensors`` are the models' tensors for that key in their compute dtype; non-floating tensors
    (integer buffers) are copied from the first model; every result keeps its original dtype.
    """
    state: dict[str, torch.Tensor] = {}
    for key in keys:
        first = sources[0].get(key)
        if not first.is_floating_point():
            state[key] = first
            continue
        work = accumulation_dtype(first.dtype)
        tensors = [first.to(work)] + [source.get(key).to(work) for source in sources[1:]]
        if key in solved:
            merged = solved[key](tensors)
        else:
            merged = torch.stack(tensors).mean(dim=0)
        state[key] = merged.to(first.dtype)
    return state


def merge_with_grams(algorithm: Any, modelpool: Any, solve: Any) -> nn.Module:
    """RegMean's and MaTS's shared run: Grams per model, ``solve(key, grams, tensors, orient)`` per linear weight.

    ``tensors`` are the models' weights in ``(out, in)`` layout and the solution is returned in it;
    ``orient`` turns another tensor of the same key (a pretrained weight) into that layout.
    ``algorithm`` provides ``name``, ``data``, ``examples``, ``batch_size`` and ``cache``; its ``cost``
    is filled. Model ``i``'s Grams come from the task of the same name. A linear layer that ran for no
    model (no input ever reached it) has nothing to regress on and is averaged; one that ran for some
    models only is an error.
    """
    pool = require_data_pool(modelpool, algorithm.name)
    names = list(pool.model_names)
    meter = CostMeter()
    cache = StatisticsCache("gram", enabled=algorithm.cache)
    request = request_with(algorithm.data, examples=algorithm.examples)
    sources = [pool.tensors(name) for name in names]
    keys = check_same_keys(dict(zip(names, sources, strict=True)))
    model = pool.load_model(names[0])
    uses = weight_layers(model, tensor_naming(pool, model, keys))
    input_major = {layer for layer, module in linear_layers(model).items() if is_input_major(module)}
    del model
    for key, tied in uses.items():
        if len({layer in input_major for layer in tied}) > 1:
            raise ConfigError(f"model pool '{pool.name}': tensor '{key}' is tied between linear layers of "
                              f"both layouts ({', '.join(tied)})")
    grams = []
    for name in track(names, f"{algorithm.name}: Gram matrices"):
        batches = draw_batches(pool, name, request, algorithm.batch_size)
        meter.examples += sum(batch_length(inputs) for inputs, _ in batches)
        grams.append(model_grams(pool, name, keys, batches, meter, cache, settings={}))
    for stats, name in zip(grams, names, strict=True):
        stray = next((key for key in stats if key not in uses), None)
        if stray is not None:
            raise ConfigError(f"model pool '{pool.name}': the Grams of model '{name}' name tensor '{stray}', "
                              "which is no linear weight of its model")
    solved = {}
    unused = 0
    for key, tied in uses.items():
        seen = [name for name, stats in zip(names, grams, strict=True) if key in stats]
        if not seen:
            unused += len(tied)
            continue
        if len(seen) < len(names):
            other = next(name for name in names if name not in seen)
            raise ConfigError(f"model pool '{pool.name}': linear weight '{key}' received inputs in model "
                              f"'{seen[0]}' but none in model '{other}'")
        solved[key] = _layer_solver(solve, key, [stats[key] for stats in grams], tied[0] in input_major)
    state = merge_state(sources, keys, solved)
    layers = sum(len(uses[key]) for key in solved)
    meter.extra.update({"statistics_cache_hits": cache.hits, "linear_layers": layers})
    if unused:
        meter.extra["linear_layers_without_inputs"] = unused
    if len(solved) < layers:
        meter.extra["tied_linear_weights"] = layers - len(solved)
    algorithm.cost = meter.as_dict()
    return pool.build_model(state)


def _layer_solver(solve: Any, key: str, grams: list[torch.Tensor], input_major: bool) -> Any:
    def orient(tensor: torch.Tensor) -> torch.Tensor:
        return as_out_in(tensor, input_major)

    return lambda tensors: orient(solve(key, grams, [orient(t) for t in tensors], orient)).contiguous()
