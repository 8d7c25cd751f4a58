"""Spherical linear interpolation (SLERP) between exactly two models, per tensor."""

from __future__ import annotations

import math

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import Capability

COLLINEAR = 0.9995
"""|cos Ω| above which SLERP falls back to linear interpolation."""


class Slerp(TensorwiseAlgorithm):
    """θ = [sin((1 − t)Ω)·v₀ + sin(tΩ)·v₁] / sin Ω with Ω = arccos(⟨v₀, v₁⟩ / ‖v₀‖‖v₁‖) over the flattened tensor.

    v₀ and v₁ are the first and second model (t = 0 gives v₀). Falls back to (1 − t)v₀ + t·v₁ when
    |cos Ω| > 0.9995 or a tensor is zero. Needs exactly two models; a pretrained model is not used
    (with the tiny suite: ``-s modelpool.n_models=2``).
    """

    name = "slerp"
    requirement = Requirement.DATA_FREE
    needs = (Capability.TWO_MODELS,)
    needs_pretrained = False
    hyperparameters = (Hyperparameter("t", float, 0.5, "Interpolation position (0: first model, 1: second)",
                                       minimum=0.0, maximum=1.0),)

    def prepare(self, pretrained, models, keys):
        """SLERP takes exactly two models."""
        if len(models) != 2:
            raise ConfigError(f"method 'slerp' needs exactly 2 models, got {len(models)}")

    def merge_tensor(self, key, pretrained, models):
        """SLERP of the two flattened tensors."""
        import torch

        v0, v1 = next(models), next(models)
        n0 = float(torch.linalg.vector_norm(v0.double()))
        n1 = float(torch.linalg.vector_norm(v1.double()))
        cosine = float((v0.double() * v1.double()).sum()) / (n0 * n1) if n0 > 0 and n1 > 0 else 1.0
        if abs(cosine) > COLLINEAR:
            return v0.mul_(1 - self.t).add_(v1, alpha=self.t)
        omega = math.acos(max(-1.0, min(1.0, cosine)))
        s = math.sin(omega)
        return v0.mul_(math.sin((1 - self.t) * omega) / s).add_(v1, alpha=math.sin(self.t * omega) / s)


@hookimpl
def register_methods(register):
    """Register ``slerp``."""
    register("slerp", "fusionbench_methods.slerp:Slerp",
             summary="Spherical interpolation of two models (t=0.5)", requirement="data-free")
