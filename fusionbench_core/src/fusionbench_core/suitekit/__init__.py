"""The kit for offline expert suites: what mini-vision and mini-text share, written once.

An *expert suite* is a pretrained backbone, one frozen head per task derived from the pretrained
backbone, and one backbone per task fine-tuned under its task's head. The backbones are what gets
merged; each task keeps its head. A suite supplies its data, its network and a build profile; the
kit supplies the rest:

- :mod:`.splits`: seeded, stratified splits, digests, packaged sources, the prepared-task cache
  (numpy and the standard library only);
- :mod:`.catalog`: :class:`~.catalog.TaskCatalog`, a suite's tasks with their sources and cache
  (no torch; ``datasets`` when a task is loaded);
- :mod:`.store`: :class:`~.store.SuiteStore`, the on-disk layout of a built variant, and the
  model-directory and head files;
- :mod:`.training`: training under a frozen head, the linear-probe fit, scoring, per-task seeds;
- :mod:`.builder`: :class:`~.builder.SuiteBuilder`, the build of one suite (a suite subclasses it
  and fills in its hooks);
- :mod:`.pools`: :class:`~.pools.ExpertSuiteModelPool` and :class:`~.pools.ExpertSuiteTaskPool`;
- :mod:`.testing`: pytest fixtures and helpers the suites' tests share.

The kit may import the core and its engine; neither imports the kit (``tests/test_layers.py``).
Its torch modules need ``fusionbench-core[torch]``. Nothing is imported here, so
``import fusionbench_core.suitekit.catalog`` stays free of torch.
"""
