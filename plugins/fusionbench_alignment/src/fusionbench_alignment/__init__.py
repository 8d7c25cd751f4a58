"""Alignment and mode connectivity for FusionBench.

- :mod:`.spec`: permutation specs (which axis of which tensor each permutation acts on), declared
  by the architecture's side as plain data and read here; applying and drawing permutations.
- Methods, one module each: :mod:`.weight_matching` (Git Re-Basin), :mod:`.activation_matching`,
  :mod:`.zipit` (ZipIt!), :mod:`.ot_fusion` (Singh and Jaggi 2020). Each aligns every model to a
  reference and averages, or hands the aligned models to another method (``then=``).
- :mod:`.connect`: loss and error along linear paths and quadratic Bézier curves, the barriers;
  :mod:`.cli` adds ``fb connect``.

The methods know no modality: data comes from the model pool (``batches`` and ``logits``) and the
spec from the pool or the model. Nothing is imported here, so entry points stay light.
"""
