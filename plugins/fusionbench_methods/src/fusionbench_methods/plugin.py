"""Entry points of the data-free methods: one light plugin object per method.

Each object registers its method lazily (``"module:Class"``), so listing imports neither the method
modules nor torch, and each method can be blocked on its own (``FUSIONBENCH_DISABLE_PLUGINS=ties``).
"""

from fusionbench_core.plugins import method_plugin

simple_average = method_plugin(
    "simple_average", "fusionbench_methods.simple_average:SimpleAverage",
    summary="Uniform average of the fine-tuned weights",
)
task_arithmetic = method_plugin(
    "task_arithmetic", "fusionbench_methods.task_arithmetic:TaskArithmetic",
    summary="θ₀ + λ·Σ task vectors (λ=0.3)",
)
