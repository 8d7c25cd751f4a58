"""What the alignment methods share at run time (needs torch): states, the aligned pool, BatchNorm re-estimation, activations.

The base class and the shared hyperparameters live in :mod:`.base`, which imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from fusionbench_core import DataModelPool, DataRequest
from fusionbench_core.errors import ConfigError

from .spec import PermutationSpec, spec_for

def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def average_states(states: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of float tensors (in float64, cast back); other tensors come from the first state."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            total = sum(s[key].to(torch.float64) for s in states)
            out[key] = (total / len(states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def float_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the floating-point tensors (what pools' ``tensors()`` serve)."""
    return {k: v for k, v in state.items() if v.is_floating_point()}


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any submodule is a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def data_batches(modelpool: DataModelPool, tasks: list[str], examples: int, batch_size: int) -> Iterator[tuple[str, Any]]:
    """``(task, inputs)`` of the first ``examples`` unlabelled training inputs of each task, in a fixed order."""
    request = DataRequest(split="train", examples=examples, labelled=False)
    for task in tasks:
        for inputs, _ in modelpool.batches(task, request, batch_size=batch_size):
            yield task, inputs


@torch.no_grad()
def reset_batchnorm(model: nn.Module, modelpool: Any, tasks: list[str], examples: int = 512, batch_size: int = 128) -> bool:
    """Re-estimate every BatchNorm layer's running statistics (cumulative mean) on training data; False if none."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    if not isinstance(modelpool, DataModelPool):
        raise ConfigError(f"re-estimating BatchNorm statistics needs data, but model pool "
                          f"'{getattr(modelpool, 'name', modelpool)}' provides none (set reset_bn=false)")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for task, inputs in data_batches(modelpool, tasks, examples, batch_size):
        modelpool.logits(task, model, inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return True


@torch.no_grad()
def probe_features(model: nn.Module, modelpool: DataModelPool, spec: PermutationSpec, tasks: list[str],
                   examples: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch, ``{permutation: float64[samples, units]}`` from the spec's probe modules (dim 1 = units)."""
    modules = dict(model.named_modules())
    missing = [name for names in spec.probes.values() for name in names if name not in modules]
    if missing or not spec.probes:
        raise ConfigError(f"permutation spec of '{spec.architecture}' names no probe module"
                          + (f" '{missing[0]}' of the model" if missing else "s") + "; activation methods need them")
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for perm, names in spec.probes.items():
        for name in names:
            def hook(_module, _inputs, output, key=name):
                captured[key] = output.detach()
            hooks.append(modules[name].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for task, inputs in data_batches(modelpool, tasks, examples, batch_size):
            captured.clear()
            modelpool.logits(task, model, inputs)
            out = {}
            for perm, names in spec.probes.items():
                parts = [captured[n].movedim(1, -1).reshape(-1, captured[n].shape[1]) for n in names]
                out[perm] = torch.cat(parts).to(torch.float64).cpu()
            yield out
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def correlations(model_a: nn.Module, model_b: nn.Module, modelpool: DataModelPool, spec: PermutationSpec,
                 tasks: list[str], examples: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Per permutation, the Pearson correlation matrix ``[2n, 2n]`` of A's and B's units (A first) on the same inputs."""
    sums: dict[str, torch.Tensor] = {}
    grams: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}
    for fa, fb in zip(probe_features(model_a, modelpool, spec, tasks, examples, batch_size),
                      probe_features(model_b, modelpool, spec, tasks, examples, batch_size)):
        for perm in fa:
            f = torch.cat([fa[perm], fb[perm]], dim=1)
            sums[perm] = sums.get(perm, 0) + f.sum(0)
            grams[perm] = grams.get(perm, 0) + f.T @ f
            count[perm] = count.get(perm, 0) + f.shape[0]
    out = {}
    for perm in sums:
        mean = sums[perm] / count[perm]
        cov = grams[perm] / count[perm] - torch.outer(mean, mean)
        std = cov.diagonal().clamp_min(0).sqrt() + 1e-12
        out[perm] = cov / torch.outer(std, std)
    return out


class AlignedPool:
    """A model pool that serves aligned weights for some models and defers everything else to ``base``."""

    def __init__(self, base: Any, states: Mapping[str, Mapping[str, torch.Tensor]]):
        self._base = base
        self._states = dict(states)
        self.name = getattr(base, "name", "aligned")

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._base, attr)

    @property
    def model_names(self) -> list[str]:
        """The base pool's model names."""
        return list(self._base.model_names)

    @property
    def has_pretrained(self) -> bool:
        """As the base pool."""
        return self._base.has_pretrained

    def tensors(self, name: str):
        """The aligned float tensors of ``name`` (the base pool's for a model not aligned)."""
        from fusionbench_core.engine.sources import StateDictSource

        if name in self._states:
            return StateDictSource(float_state(self._states[name]))
        return self._base.tensors(name)

    def load_model(self, name: str) -> nn.Module:
        """The aligned model ``name`` (the base pool's for a model not aligned)."""
        if name in self._states:
            return self._base.build_model(self._states[name])
        return self._base.load_model(name)

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """As the base pool."""
        return self._base.build_model(state)

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32):
        """As the base pool."""
        return self._base.batches(task, request, batch_size=batch_size)

    def logits(self, task: str, model: Any, inputs: Any) -> torch.Tensor:
        """As the base pool."""
        return self._base.logits(task, model, inputs)


def run_method(name: str, modelpool: Any, seed: int = 0) -> Any:
    """Run the registered method ``name`` with its defaults on ``modelpool``."""
    from fusionbench_core.plugins import get_host

    method = get_host().registry("method").entry(name).load()()
    if hasattr(method, "seed"):
        method.seed = seed
    return method, method.run(modelpool)


def require_data(modelpool: Any, method: str) -> DataModelPool:
    """``modelpool`` if it hands out data, else the one-line error naming the method and the pool."""
    if not isinstance(modelpool, DataModelPool):
        raise ConfigError(f"method '{method}' needs data, but model pool '{getattr(modelpool, 'name', modelpool)}' "
                          f"provides none")
    return modelpool
