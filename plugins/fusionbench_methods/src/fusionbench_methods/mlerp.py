"""MLERP, the multi-model SLERP of Tam et al. (2024): the average's direction at the largest model's norm.

θ = θ̄ · max_i ‖θ_i‖ / ‖θ̄‖ with θ̄ = (1/T) Σ θ_i. The norms are over the whole model (every
floating-point parameter flattened into one vector), as in the git-theta code Tam et al. use.
For two models of equal norm this is exactly SLERP at t = 0.5: the midpoint of the great-circle
arc is the normalised sum at the common norm.
"""

from __future__ import annotations

import math

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum

SCOPES = ("model", "tensor")
TARGETS = ("max", "mean")


class Mlerp(TensorwiseAlgorithm):
    """MLERP: rescale the uniform average of the models to the largest (or mean) of their norms.

    ``scope=model`` (Tam et al.): one factor for the whole model, ``max_i ‖θ_i‖ / ‖θ̄‖`` with the
    norms over every floating tensor, found in one streaming pass before merging. ``scope=tensor``:
    the same rule per tensor. ``target=mean`` rescales to the mean of the norms instead of their
    maximum. A zero average is returned as it is. Needs no pretrained model and has no λ: identical
    models give that model, and two models of equal norm give SLERP at t = 0.5.
    """

    name = "mlerp"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    needs_pretrained = False
    hyperparameters = (
        Hyperparameter("scope", str, "model", "Norms over the whole model (paper) or per tensor", choices=SCOPES),
        Hyperparameter("target", str, "max", "Rescale the average to the largest norm (paper) or the mean norm",
                       choices=TARGETS),
    )

    @property
    def chunkable(self) -> bool:  # type: ignore[override]
        """Row blocks with whole-model norms; whole tensors with per-tensor norms."""
        return self.scope == "model"

    def prepare(self, pretrained, models, keys):
        """With ``scope=model``: one pass summing each model's and the average's squared norms."""
        import torch

        self._factor = None
        self.cost["prepare_passes"] = 0
        if self.scope != "model":
            return
        squares = [0.0] * len(models)
        average = 0.0
        for key in keys:
            if not getattr(torch, models[0].info(key).dtype).is_floating_point:
                continue
            total = None
            for index, source in enumerate(models):
                tensor = source.get(key).double()
                squares[index] += float(tensor.square().sum())
                total = tensor if total is None else total.add_(tensor)
            average += float(total.div_(len(models)).square().sum())
        self.cost["prepare_passes"] = 1
        self._factor = self._rescale([math.sqrt(s) for s in squares], math.sqrt(average))
        self.cost["rescale_factor"] = self._factor

    def _rescale(self, norms: list[float], average_norm: float) -> float:
        if average_norm == 0.0:
            return 1.0
        target = max(norms) if self.target == "max" else sum(norms) / len(norms)
        return target / average_norm

    def merge_tensor(self, key, pretrained, models):
        """The average, times the whole-model factor (or this tensor's own)."""
        import torch

        if self._factor is not None:
            total, count = running_sum(models)
            return total.div_(count).mul_(self._factor)
        tensors = [t.double() for t in models]
        norms = [float(torch.linalg.vector_norm(t)) for t in tensors]
        average = torch.stack(tensors).mean(0)
        factor = self._rescale(norms, float(torch.linalg.vector_norm(average)))
        return average.mul_(factor)


@hookimpl
def register_methods(register):
    """Register ``mlerp``."""
    register("mlerp", "fusionbench_methods.mlerp:Mlerp",
             summary="MLERP: the average rescaled to the largest model norm (multi-model SLERP, Tam et al.)",
             requirement="data-free")
