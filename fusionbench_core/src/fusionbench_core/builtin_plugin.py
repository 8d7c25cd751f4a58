"""Core's own plugin: registers the tiny testing suite (lazily; listing imports nothing heavy)."""

from __future__ import annotations

from .hookspecs import hookimpl

TINY_TASKS = ["task0", "task1", "task2"]
TINY_PROVIDES = ["data", "pretrained", "architecture", "layer-stack", "linear-modules"]
"""What the tiny model pool offers methods (``fusionbench_core.needs``); its task pool scores class logits."""


@hookimpl
def register_modelpools(register):
    """Register the tiny in-memory suite's model pool as ``tiny``."""
    register("tiny", "fusionbench_core.tiny:TinyModelPool",
             summary="Tiny in-memory MLP suite (tests, quick checks)", tasks=TINY_TASKS, provides=TINY_PROVIDES)


@hookimpl
def register_taskpools(register):
    """Register the tiny in-memory suite's task pool as ``tiny``."""
    register("tiny", "fusionbench_core.tiny:TinyTaskPool",
             summary="Tiny in-memory MLP suite (tests, quick checks)", tasks=TINY_TASKS, provides=["class-logits"])
