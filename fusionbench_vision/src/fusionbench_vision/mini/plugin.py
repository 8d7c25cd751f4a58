"""Entry point ``mini_vision``: registers the offline mini-vision suite without importing torch.

The model pool and the task pool share the name ``mini-vision``; their targets are lazy strings,
so ``fb modelpools`` lists the suite without loading anything heavy.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

TASKS = ["mnist", "digits", "twemoji", "noto_emoji", "emoji_subcategory", "font_letters"]
SUMMARY = "Offline CPU suite: CLIP-architecture encoder pretrained on Fashion-MNIST, 6 real image experts"


@hookimpl
def register_modelpools(register):
    """Register the mini-vision model pool (builds itself on first use)."""
    register("mini-vision", "fusionbench_vision.mini.pool:MiniVisionModelPool", summary=SUMMARY, tasks=TASKS,
             pretraining="fashion_mnist")


@hookimpl
def register_taskpools(register):
    """Register the mini-vision task pool (test accuracy with each task's frozen head)."""
    register("mini-vision", "fusionbench_vision.mini.pool:MiniVisionTaskPool", summary=SUMMARY, tasks=TASKS)
