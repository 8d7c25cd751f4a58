"""Permutation specs: which axis of which tensor each permutation of hidden units acts on.

A spec is declared by the architecture's side (the model pool, or the model) as plain data, so
suites need not import this plugin::

    {
        "architecture": "wide-mlp",
        "permutations": {                     # in depth order (OT fusion and partial zips use it)
            "P0": [["layers.0.weight", 0], ["layers.0.bias", 0], ["layers.2.weight", 1]],
            ...
        },
        "probes": {"P0": ["layers.1"], ...},  # modules whose output carries P0's units on dim 1
    }

A residual stream is one permutation listed on every tensor that reads or writes the stream; a
normalisation layer's parameters and running statistics are listed under their channels'
permutation; attention heads are permuted as whole blocks by listing ``[key, axis, head_size]``
(the axis is cut into blocks of ``head_size``; the permutation then has one entry per head).
Axis 0 of a tensor is its output (units it produces), every other axis an input; ZipIt! relies
on that convention. Tensors a spec does not name are shared by all models' units (input layers'
input axes, output layers' output axes) and are averaged as they are.

A pool offers the spec as ``modelpool.permutation_spec()`` or a model as ``model.permutation_spec()``;
:func:`spec_for` finds it or raises the one-line error naming the architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fusionbench_core.errors import ConfigError

__all__ = ["PermutationSpec", "identity_permutations", "invert", "permute_state", "random_permutations", "spec_for"]


@dataclass(frozen=True)
class Axis:
    """One permuted axis of one tensor; ``block > 1`` permutes blocks of that many entries (attention heads)."""

    key: str
    axis: int
    block: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """The permutations of an architecture, each with the tensor axes it acts on and its probe modules."""

    architecture: str
    permutations: dict[str, tuple[Axis, ...]]
    probes: dict[str, tuple[str, ...]]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PermutationSpec:
        """Read the declared plain-data form (see the module docstring)."""
        arch = str(data.get("architecture", "unknown"))
        perms: dict[str, tuple[Axis, ...]] = {}
        for name, entries in dict(data["permutations"]).items():
            axes = []
            for entry in entries:
                key, axis, *rest = entry
                axes.append(Axis(str(key), int(axis), int(rest[0]) if rest else 1))
            perms[str(name)] = tuple(axes)
        probes = {str(k): tuple(v) for k, v in dict(data.get("probes", {})).items()}
        return cls(arch, perms, probes)

    def axes_by_key(self) -> dict[str, list[tuple[str, Axis]]]:
        """``{tensor key: [(permutation, axis), ...]}``."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for name, axes in self.permutations.items():
            for ax in axes:
                out.setdefault(ax.key, []).append((name, ax))
        return out

    def sizes(self, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Number of units of each permutation in ``state``; raises if the spec and the state disagree."""
        sizes = {}
        for name, axes in self.permutations.items():
            seen = set()
            for ax in axes:
                if ax.key not in state:
                    raise ConfigError(f"permutation spec of '{self.architecture}': tensor '{ax.key}' is not in the model")
                length = state[ax.key].shape[ax.axis]
                if length % ax.block:
                    raise ConfigError(f"permutation spec of '{self.architecture}': axis {ax.axis} of '{ax.key}' "
                                      f"({length}) is not a multiple of its block {ax.block}")
                seen.add(length // ax.block)
            if len(seen) != 1:
                raise ConfigError(f"permutation spec of '{self.architecture}': permutation '{name}' spans axes of "
                                  f"different sizes {sorted(seen)}")
            sizes[name] = seen.pop()
        return sizes


def spec_for(modelpool: Any, model: Any = None) -> PermutationSpec:
    """The spec the pool (or else the model) declares; a one-line error naming the architecture if none does."""
    for owner in (modelpool, model):
        declare = getattr(owner, "permutation_spec", None)
        if callable(declare):
            data = declare()
            if data is not None:
                return data if isinstance(data, PermutationSpec) else PermutationSpec.from_data(data)
    arch = type(model).__name__ if model is not None else "unknown"
    config = getattr(model, "config", None)
    arch = getattr(config, "model_type", None) or getattr(config, "architecture", None) or arch
    raise ConfigError(f"no permutation spec for architecture '{arch}' (model pool "
                      f"'{getattr(modelpool, 'name', modelpool)}'): alignment needs one, see docs/alignment.md")


def _expand(perm: torch.Tensor, block: int) -> torch.Tensor:
    """A permutation of blocks as a permutation of their entries."""
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block)[None, :]).reshape(-1)


def permute_axis(tensor: torch.Tensor, ax: Axis, perm: torch.Tensor) -> torch.Tensor:
    """``tensor`` with ``ax`` reordered so that unit ``i`` becomes unit ``perm[i]`` of the input."""
    return tensor.index_select(ax.axis, _expand(perm, ax.block).to(tensor.device))


def permute_state(spec: PermutationSpec, state: Mapping[str, torch.Tensor],
                  perms: Mapping[str, torch.Tensor], *, skip: tuple[str, Axis] | None = None) -> dict[str, torch.Tensor]:
    """Apply ``perms`` (``new[i] = old[perm[i]]`` on every listed axis) to a state; ``skip`` leaves one axis alone."""
    by_key = spec.axes_by_key()
    out = {}
    for key, tensor in state.items():
        for name, ax in by_key.get(key, ()):
            if skip is not None and skip == (name, ax):
                continue
            tensor = permute_axis(tensor, ax, perms[name])
        out[key] = tensor
    return out


def identity_permutations(spec: PermutationSpec, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The identity for every permutation."""
    return {name: torch.arange(n) for name, n in spec.sizes(state).items()}


def random_permutations(spec: PermutationSpec, state: Mapping[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """One seeded random permutation per permutation of the spec."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(n, generator=gen) for name, n in spec.sizes(state).items()}


def invert(perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of each permutation."""
    return {name: torch.argsort(p) for name, p in perms.items()}
