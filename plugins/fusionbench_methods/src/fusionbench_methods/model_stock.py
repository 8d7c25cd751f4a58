"""Model Stock (Jang et al. 2024): per layer, move from θ₀ toward the average by a ratio set by the task vectors' angle."""

from __future__ import annotations

from fusionbench_core import Requirement, hookimpl
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm
from fusionbench_core.errors import ConfigError


class ModelStock(TensorwiseAlgorithm):
    """θ = t·mean(θ_i) + (1 − t)·θ₀ per tensor, t = k·cosφ / ((k − 1)·cosφ + 1), k = number of models.

    cosφ is the mean pairwise cosine between the task vectors τ_i of that tensor. It is streamed
    (memory flat in k): with unit vectors u_i = τ_i/‖τ_i‖, Σ_{i<j} cos(τ_i, τ_j) = (‖Σu_i‖² − Σ‖u_i‖²)/2;
    a zero task vector counts as cosine 0 with every other. A zero denominator gives t = 0.
    No hyperparameters; needs θ₀ and at least two models.
    """

    name = "model_stock"
    requirement = Requirement.DATA_FREE
    inplace_inputs = False
    hyperparameters = ()

    def prepare(self, pretrained, models, keys):
        """Model Stock needs at least two models."""
        if len(models) < 2:
            raise ConfigError(f"method 'model_stock' needs at least 2 models, got {len(models)}")

    def ratio(self, cosine: float, k: int) -> float:
        """t = k·cos / ((k − 1)·cos + 1)."""
        denominator = (k - 1) * cosine + 1
        return k * cosine / denominator if abs(denominator) > 1e-12 else 0.0

    def merge_tensor(self, key, pretrained, models):
        """Accumulate Σθ_i and Σu_i, then interpolate."""
        import torch

        total = unit_sum = None
        squares = 0.0
        k = 0
        for tensor in models:
            total = tensor.clone() if total is None else total.add_(tensor)
            delta = tensor - pretrained
            norm = float(torch.linalg.vector_norm(delta.double()))
            unit = delta.div_(norm) if norm > 0 else delta.zero_()
            squares += 1.0 if norm > 0 else 0.0
            unit_sum = unit if unit_sum is None else unit_sum.add_(unit)
            k += 1
        pair_sum = (float(torch.linalg.vector_norm(unit_sum.double())) ** 2 - squares) / 2
        cosine = pair_sum / (k * (k - 1) / 2)
        t = self.ratio(cosine, k)
        return total.div_(k).mul_(t).add_(pretrained, alpha=1 - t)


@hookimpl
def register_methods(register):
    """Register ``model_stock``."""
    register("model_stock", "fusionbench_methods.model_stock:ModelStock",
             summary="Model Stock: interpolate θ₀→average by the task vectors' mean cosine", requirement="data-free")
