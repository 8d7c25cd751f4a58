"""Layer-wise AdaMerging: one coefficient per task and parameter tensor, learned by entropy minimisation."""

from __future__ import annotations

from fusionbench_core import hookimpl

from .adamerging_base import AdaMergingBase


class LayerWiseAdaMerging(AdaMergingBase):
    """θ^l = θ₀^l + Σ_i λ_i^l τ_i^l with one λ_i^l per task and parameter tensor (in [0, 1] unless
    ``clamp=none``), initialised at 0.3.

    Needs the pretrained model and unlabelled test inputs of every task; see :class:`AdaMergingBase`.
    """

    name = "layer_wise_adamerging"
    layer_wise = True


@hookimpl
def register_methods(register):
    """Register ``layer_wise_adamerging``."""
    register("layer_wise_adamerging", "fusionbench_data_methods.layer_wise_adamerging:LayerWiseAdaMerging",
             summary="AdaMerging: one λ per task and layer learned by test-time entropy minimisation",
             requirement="test-time")
