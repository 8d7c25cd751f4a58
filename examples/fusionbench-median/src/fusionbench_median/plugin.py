"""The plugin module named by the ``fusionbench`` entry point: registers ``median`` lazily."""

from fusionbench_core import hookimpl


@hookimpl
def register_methods(register):
    """Register the median merge without importing it (listing stays free of torch)."""
    register("median", "fusionbench_median.method:MedianMerging",
             summary="Element-wise median of the fine-tuned weights", requirement="data-free")
