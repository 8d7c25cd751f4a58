"""Data-free weight-merging methods for FusionBench; each module is its own plugin entry point.

A module holds the method class and its ``register_methods`` hook; the hook registers a lazy
``"module:Class"`` string, and the module imports torch only inside the methods, so ``fb methods``
stays light.
"""
