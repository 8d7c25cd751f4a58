"""Linear interpolation / extrapolation between two endpoints (ExPO when t > 1)."""

from __future__ import annotations

from fusionbench_core import Hyperparameter, Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, running_sum
from fusionbench_core.errors import ConfigError


class LinearInterpolation(TensorwiseAlgorithm):
    """θ = A + t·(B − A): t = 0 gives A, t = 1 gives B, t > 1 extrapolates past B (ExPO), t < 0 before A.

    Endpoints: with a pretrained model, A = θ₀ and B = the fine-tuned model (the mean of the
    fine-tuned models when there are several); without one, exactly two models A = θ₁ and B = θ₂.
    ExPO (Zheng et al. 2024) is ``--pretrained SFT --model ALIGNED -s t=1+α``.
    """

    name = "linear_interpolation"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    gpu_worthwhile = False
    needs_pretrained = False
    chunkable = True
    hyperparameters = (
        Hyperparameter("t", float, 0.5, "Position on the line A→B (0: A, 1: B, >1: extrapolation/ExPO)"),
    )

    def prepare(self, pretrained, models, keys):
        """Check the number of endpoints."""
        if pretrained is None and len(models) != 2:
            raise ConfigError(f"method 'linear_interpolation' without a pretrained model needs exactly 2 models, "
                              f"got {len(models)}")

    def merge_tensor(self, key, pretrained, models):
        """A + t (B − A), B accumulated as a running mean."""
        if pretrained is None:
            a = next(models)
            b = next(models)
            return (a * (1 - self.t)).add_(b, alpha=self.t)
        total, count = running_sum(models)
        return total.div_(count).sub_(pretrained).mul_(self.t).add_(pretrained)


@hookimpl
def register_methods(register):
    """Register ``linear_interpolation``."""
    register("linear_interpolation", "fusionbench_methods.linear_interpolation:LinearInterpolation",
             summary="A + t·(B − A); t>1 extrapolates (ExPO)", requirement="data-free")
