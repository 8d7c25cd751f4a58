"""Entry point ``fusionbench_alignment``: registers the four alignment methods without importing torch.

The targets are lazy ``"module:Class"`` strings, so ``fb methods`` lists them without loading
the method modules (which need torch, scipy and POT).
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

METHODS = (
    ("weight_matching", "fusionbench_alignment.weight_matching:WeightMatching", "data-free",
     "Git Re-Basin weight matching: permutation alignment to a reference, then the average"),
    ("activation_matching", "fusionbench_alignment.activation_matching:ActivationMatching", "train-statistics",
     "Git Re-Basin activation matching: align units by activation correlation, then average"),
    ("zipit", "fusionbench_alignment.zipit:ZipIt", "train-statistics",
     "ZipIt!: merge correlated units across and within two models (partial zip up to layer L)"),
    ("ot_fusion", "fusionbench_alignment.ot_fusion:OTFusion", "data-free",
     "OT fusion (Singh & Jaggi 2020): layer-wise optimal transport onto a reference (EMD or Sinkhorn)"),
)
"""(name, target, requirement, summary) of every method this distribution registers."""


@hookimpl
def register_methods(register):
    """Register the alignment methods."""
    for name, target, requirement, summary in METHODS:
        register(name, target, summary=summary, requirement=requirement)
