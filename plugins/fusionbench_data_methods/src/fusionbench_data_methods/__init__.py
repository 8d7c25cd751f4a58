"""Fusion methods that use data, for FusionBench: ensembles, Fisher merging, RegMean, RegMean++, MaTS
and AdaMerging (task-wise and layer-wise).

Each ``<method>.py`` module is its own plugin entry point: it holds the method class and its
``register_methods`` hook, and imports torch only inside the method, so ``fb methods`` stays light.
The shared machinery lives in :mod:`.data_access` (cost meter, device moves), :mod:`.statistics_cache`
(on-disk cache of Fisher and Gram statistics keyed by model content and data), :mod:`.linear_statistics`
(Gram matrices of ``nn.Linear`` inputs and the RegMean/MaTS solvers), :mod:`.sequential_regmean`
(RegMean++'s layer-by-layer loop), :mod:`.fisher_statistics`, :mod:`.ensemble_model` (the fused model of
the ensembles and the predictor protocol), :mod:`.adamerging_base` and :mod:`.coefficient_merger`.

Every method reaches data only through its :class:`~fusionbench_core.DataModelPool`
(``batches`` and ``logits``), after declaring ``requirement`` and ``data`` on its class.
"""
