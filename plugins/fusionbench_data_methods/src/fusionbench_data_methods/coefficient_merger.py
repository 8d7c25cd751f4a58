"""The machinery of AdaMerging (Yang et al., ICLR 2024): merge coefficients learned by test-time entropy
minimisation.

``θ(λ) = θ₀ + Σ_i λ_i ⊙ τ_i`` with one λ per task (task-wise) or one per task and parameter tensor
(layer-wise). The merged parameters are computed functionally from the pretrained weights and the
stacked task vectors and fed to one backbone through :func:`torch.func.functional_call`, so the only
trainable tensor is λ and no per-task copy of the model is ever built. Each step takes one batch of
unlabelled test inputs per task and minimises the sum over tasks of the mean prediction entropy with
Adam. How λ is kept in [0, 1] is :data:`CLAMPS`' choice: ``forward`` clamps it where θ(λ) is formed
(the paper's released code, and upstream's ``clamp_weights=true``: ``torch.clamp``, whose gradient is
0 outside [0, 1], so an entry that leaves stops moving and acts at the bound), ``project`` sets λ back
into [0, 1] after every Adam step (it keeps a gradient at the bounds), ``none`` leaves it free
(upstream's CLIP default, ``clamp_weights=false``). All three agree while λ stays inside [0, 1].

The backbone's parameter names and the pool's tensor names are paired through
:func:`fusionbench_core.naming.tensor_naming`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fusionbench_core import PRETRAINED, DataRequest
from fusionbench_core.errors import ConfigError
from fusionbench_core.naming import tensor_naming
from fusionbench_core.progress import track

from .data_access import CostMeter, batch_length, check_differentiable, move_to

CLAMPS = ("forward", "project", "none")
"""How λ is kept in [0, 1]: clamped where θ(λ) is formed, projected after each step, or not at all."""


class CoefficientMerger(nn.Module):
    """``θ(λ)`` over one backbone: λ is the module's only parameter; θ₀ and the task vectors are plain (frozen) tensors.

    Calling the merger runs the backbone with the merged parameters (``functional_call``), so it can be
    handed to a pool's ``logits`` as a backbone. :meth:`merged_parameters` gives the tensors themselves.
    """

    def __init__(self, backbone: nn.Module, task_vectors: dict[str, torch.Tensor], tasks: int, layer_wise: bool,
                 init: float, clamp: str = "forward"):
        super().__init__()
        if clamp not in CLAMPS:
            raise ConfigError(f"unknown λ clamp '{clamp}'; choose one of {', '.join(CLAMPS)}")
        self.clamp = clamp
        backbone.requires_grad_(False)
        self.__dict__["backbone"] = backbone  # not a submodule: its parameters are never trained
        self.keys = list(task_vectors)
        self.base = {key: param.detach() for key, param in backbone.named_parameters() if key in task_vectors}
        self.task_vectors = task_vectors  # key -> (tasks, *shape)
        shape = (tasks, len(self.keys)) if layer_wise else (tasks, 1)
        dtype = next(iter(task_vectors.values())).dtype
        self.coefficients = nn.Parameter(torch.full(shape, float(init), dtype=dtype, device=self._device()))
        self.layer_wise = layer_wise
        self.tensor_keys = {key: key for key in self.keys}
        """Merged parameter's name → the pool's tensor name (set by :func:`build_merger`)."""
        self._cached: dict[str, torch.Tensor] | None = None

    def _device(self) -> torch.device:
        return next(iter(self.task_vectors.values())).device

    def effective_coefficients(self) -> torch.Tensor:
        """The λ that θ(λ) uses: the stored λ clamped to [0, 1] (``clamp=forward``), else the stored λ."""
        return self.coefficients.clamp(0.0, 1.0) if self.clamp == "forward" else self.coefficients

    def merged_parameters(self) -> dict[str, torch.Tensor]:
        """``θ₀ + Σ_i λ_i τ_i`` for every merged parameter (differentiable in λ)."""
        merged = {}
        coefficients = self.effective_coefficients()
        for index, key in enumerate(self.keys):
            lam = coefficients[:, index if self.layer_wise else 0]
            vectors = self.task_vectors[key]
            merged[key] = self.base[key] + torch.tensordot(lam, vectors, dims=1)
        return merged

    def freeze_step(self) -> None:
        """Compute θ(λ) once for the coming forward passes of one optimisation step (all tasks share it)."""
        self._cached = self.merged_parameters()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The backbone's forward with the merged parameters.

        Inputs are moved to the merger's device and the output back to the inputs' device, so a pool
        whose head stays on the CPU still works while the backbone runs on the accelerator.
        """
        params = self._cached if self._cached is not None else self.merged_parameters()
        device = self._device()
        origin = _first_device((args, kwargs))
        out = functional_call(self.backbone, params, move_to(args, device), move_to(kwargs, device), strict=False)
        return out if origin is None or origin == device else move_to(out, origin)

    def release_step(self) -> None:
        """Forget the parameters fixed by :meth:`freeze_step` (later calls recompute θ(λ))."""
        self._cached = None

    def after_step(self) -> None:
        """After each optimiser step: with ``clamp=project``, set λ back into [0, 1]."""
        if self.clamp == "project":
            with torch.no_grad():
                self.coefficients.clamp_(0.0, 1.0)


def _first_device(obj: Any) -> torch.device | None:
    if isinstance(obj, torch.Tensor):
        return obj.device
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for value in values:
        found = _first_device(value)
        if found is not None:
            return found
    return None


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def cycle_batches(modelpool: Any, task: str, request: DataRequest, batch_size: int) -> Iterator[Any]:
    while True:
        empty = True
        for inputs, _ in modelpool.batches(task, request, batch_size=batch_size):
            empty = False
            yield inputs
        if empty:
            raise ConfigError(f"model pool '{modelpool.name}' gave no test inputs for task '{task}'")



def build_merger(pool: Any, device: torch.device, layer_wise: bool, init: float,
                 clamp: str = "forward") -> tuple[CoefficientMerger, list[str]]:
    """The pretrained backbone on ``device`` with the stacked task vectors of its floating parameters.

    The merger's ``tensor_keys`` maps each merged parameter's name to the pool's tensor name.
    """
    from fusionbench_core.protocols import check_same_keys

    names = list(pool.model_names)
    backbone = pool.load_model(PRETRAINED).to(device)
    backbone.eval()
    base_source = pool.tensors(PRETRAINED)
    sources = [pool.tensors(name) for name in names]
    keys = check_same_keys(dict(zip([PRETRAINED, *names], [base_source, *sources], strict=True)))
    naming = tensor_naming(pool, backbone, keys)
    vectors: dict[str, torch.Tensor] = {}
    tensor_keys: dict[str, str] = {}
    for name, param in backbone.named_parameters():
        if not param.is_floating_point():
            continue
        base = param.detach()
        key = tensor_keys[name] = naming.key(name)
        vectors[name] = torch.stack([source.get(key).to(device=device, dtype=base.dtype) - base for source in sources])
    if not vectors:
        raise ConfigError(f"model pool '{pool.name}': the pretrained model has no floating parameters")
    merger = CoefficientMerger(backbone, vectors, len(names), layer_wise, init, clamp)
    merger.tensor_keys = tensor_keys
    return merger, names


def minimise_entropy(pool: Any, model: Any, parameters: list[torch.Tensor], tasks: list[str], request: DataRequest, *,
                     steps: int, lr: float, batch_size: int, meter: CostMeter, method: str, description: str,
                     device: torch.device | None = None, before_step: Callable[[], None] | None = None,
                     after_step: Callable[[], None] | None = None) -> None:
    """``steps`` Adam steps over ``parameters`` on the summed per-task mean prediction entropy of ``model``.

    Each step takes one batch of the pool's unlabelled inputs per task (cycling through each
    task's batches) and scores ``model`` with the task's head (``pool.logits``); inputs are moved
    to ``device`` first when one is given. ``before_step``/``after_step`` run around each step (how
    AdaMerging refreshes and clamps its λ). Passes and the distinct examples seen go to ``meter``.
    Shared by AdaMerging and the mixing methods' router training.
    """
    streams = {task: cycle_batches(pool, task, request, batch_size) for task in tasks}
    seen = dict.fromkeys(tasks, 0)
    optimiser = torch.optim.Adam(parameters, lr=lr) if steps else None
    for _ in track(range(steps), description):
        optimiser.zero_grad(set_to_none=True)
        if before_step is not None:
            before_step()
        loss = None
        for task in tasks:
            inputs = next(streams[task])
            logits = pool.logits(task, model, inputs if device is None else move_to(inputs, device))
            check_differentiable(logits, pool, method)
            term = entropy(logits).mean()
            loss = term if loss is None else loss + term
            n = batch_length(inputs)
            seen[task] += n
            meter.forward_passes += n
            meter.backward_passes += n
        loss.backward()
        optimiser.step()
        if after_step is not None:
            after_step()
    if steps:
        sizes = {task: sum(batch_length(x) for x, _ in pool.batches(task, request, batch_size=batch_size))
                 for task in tasks}
        meter.examples = sum(min(count, sizes[task]) for task, count in seen.items())


def learn_coefficients(pool: Any, merger: CoefficientMerger, tasks: list[str], request: DataRequest, *, steps: int,
                       lr: float, batch_size: int, meter: CostMeter, method: str) -> None:
    """``steps`` Adam steps on the summed per-task mean entropy, λ kept in [0, 1] as ``merger.clamp`` says;
    counts passes."""
    minimise_entropy(pool, merger, [merger.coefficients], tasks, request, steps=steps, lr=lr, batch_size=batch_size,
                     meter=meter, method=method, description=f"{method}: entropy minimisation",
                     before_step=merger.freeze_step, after_step=merger.after_step)
    merger.release_step()


def final_state(pool: Any, merger: CoefficientMerger, init: float) -> dict[str, torch.Tensor]:
    """θ(λ) for every parameter (by the pool's tensor names); floating buffers get task arithmetic at the
    initial λ; the rest is θ₀'s."""
    with torch.no_grad():
        merged = {merger.tensor_keys[name]: value.detach().cpu()
                  for name, value in merger.merged_parameters().items()}
    base = pool.tensors(PRETRAINED)
    sources = [pool.tensors(name) for name in pool.model_names]
    state = {}
    for key in base.keys():
        theta0 = base.get(key)
        if key in merged:
            state[key] = merged[key].to(theta0.dtype)
        elif theta0.is_floating_point():
            state[key] = theta0 + init * sum(source.get(key).to(theta0.dtype) - theta0 for source in sources)
        else:
            state[key] = theta0
    return state
