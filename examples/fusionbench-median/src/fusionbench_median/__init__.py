"""Example FusionBench plugin: an element-wise median merge (see ``docs/plugins.md``)."""
