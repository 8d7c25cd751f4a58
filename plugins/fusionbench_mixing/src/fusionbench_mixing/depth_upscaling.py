"""Depth up-scaling (SOLAR, Kim et al. 2023): a deeper model stacked from layer ranges of one model."""

from __future__ import annotations

import re

from fusionbench_core import PRETRAINED, Hyperparameter, Requirement, hookimpl
from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import Capability

from .mixing_base import MixingAlgorithm

RANGE = re.compile(r"^\s*range\(\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?(?:,\s*(-?\d+)\s*)?\)\s*$")


def parse_layer_indices(items: list, layers: int, owner: str = "depth_upscaling") -> list[int]:
    """Layer indices from ints and ``"range(a, b[, step])"`` strings, in order; ``[]``: SOLAR's split.

    SOLAR's split of ``n`` layers with ``m = n // 4`` is ``range(0, n − m)`` then ``range(m, n)``
    (32 layers → 48, as the paper). Every index must name one of the ``layers`` layers.
    """
    if not items:
        overlap = layers // 4
        return list(range(0, layers - overlap)) + list(range(overlap, layers))
    indices: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            indices.append(item)
            continue
        match = RANGE.match(str(item))
        if match is None:
            raise ConfigError(f"hyperparameter '{owner}.layer_indices' takes ints and 'range(a,b)' strings, "
                              f"got '{item}'")
        args = [int(g) for g in match.groups() if g is not None]
        indices.extend(range(*args))
    for index in indices:
        if not 0 <= index < layers:
            raise ConfigError(f"hyperparameter '{owner}.layer_indices': index {index} is out of range "
                              f"for a stack of {layers} layers")
    if not indices:
        raise ConfigError(f"hyperparameter '{owner}.layer_indices' selects no layer")
    return indices


class DepthUpscaling(MixingAlgorithm):
    """The layer stack of one model of the pool, rebuilt from independent copies of the layers at ``layer_indices``.

    ``layer_indices`` lists ints and ``"range(a,b)"`` strings as upstream (``["range(0,24)", "range(8,32)"]``,
    given on the command line as JSON: ``-s 'layer_indices=["range(0,24)","range(8,32)"]'``); empty, it is
    SOLAR's split (see :func:`parse_layer_indices`). Everything outside the stack is the model's own.
    SOLAR continues pre-training after up-scaling; the benchmark scores the model as built.
    """

    name = "depth_upscaling"
    requirement = Requirement.DATA_FREE
    needs = (Capability.ARCHITECTURE, Capability.LAYER_STACK)
    hyperparameters = (
        Hyperparameter("layer_indices", list, [],
                       "Layers to stack, ints and 'range(a,b)' strings; empty: SOLAR's split"),
        Hyperparameter("model", str, PRETRAINED, "The pool's model whose layers are stacked (default: the pretrained)"),
    )

    def run(self, modelpool):
        """Stack the chosen layers of ``model``."""
        from fusionbench_core.errors import UnknownComponentError
        from fusionbench_core.protocols import architecture_of
        from fusionbench_data_methods.data_access import CostMeter

        from .backbone import layer_stack, restack

        known = ([PRETRAINED] if modelpool.has_pretrained else []) + list(modelpool.model_names)
        if self.model not in known:
            raise UnknownComponentError("model", self.model, known, owner=f"model pool '{modelpool.name}'")
        spec = architecture_of(modelpool, self.name)
        model = modelpool.load_model(self.model)
        layers = len(layer_stack(model, spec, self.name, modelpool.name))
        indices = parse_layer_indices(self.layer_indices, layers)
        model = restack(model, spec.layers, indices)
        return self.finish(modelpool, model, CostMeter(), layers={"stack": spec.layers, "indices": indices},
                           layers_before=layers, layers_after=len(indices), adaptation_steps=0)


@hookimpl
def register_methods(register):
    """Register ``depth_upscaling``."""
    register("depth_upscaling", "fusionbench_mixing.depth_upscaling:DepthUpscaling",
             summary="Depth up-scaling (SOLAR): stack layer ranges of one model (layer_indices)",
             requirement="data-free")
