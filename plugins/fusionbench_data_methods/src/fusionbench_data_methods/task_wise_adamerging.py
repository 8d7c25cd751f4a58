"""Task-wise AdaMerging: one coefficient per task, learned by test-time entropy minimisation."""

from __future__ import annotations

from fusionbench_core import hookimpl

from .adamerging_base import AdaMergingBase


class TaskWiseAdaMerging(AdaMergingBase):
    """θ = θ₀ + Σ_i λ_i τ_i with one λ_i per task (kept in [0, 1] unless ``clamp=none``), initialised at 0.3.

    Needs the pretrained model and unlabelled test inputs of every task; see :class:`AdaMergingBase`.
    """

    name = "task_wise_adamerging"
    layer_wise = False


@hookimpl
def register_methods(register):
    """Register ``task_wise_adamerging``."""
    register("task_wise_adamerging", "fusionbench_data_methods.task_wise_adamerging:TaskWiseAdaMerging",
             summary="AdaMerging: one λ per task learned by test-time entropy minimisation",
             requirement="test-time")
