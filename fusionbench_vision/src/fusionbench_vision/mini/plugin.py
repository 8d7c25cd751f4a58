"""Entry point ``mini_vision``: registers the offline mini-vision suite without importing torch.

The model pool and the task pool share the name ``mini-vision``; their targets are lazy strings,
so ``fb modelpools`` lists the suite without loading anything heavy.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

TASKS = ["mnist", "digits", "font_digits", "font_letters", "twemoji", "noto_emoji", "emoji_subcategory", "skin_tone"]
SUMMARY = ("Offline CPU suite: CLIP-architecture encoder pretrained on Fashion-MNIST, few-shot cosine heads, "
           "8 real image experts")


@hookimpl
def register_modelpools(register):
    """Register the mini-vision model pool (builds itself on first use)."""
    register("mini-vision", "fusionbench_vision.mini.pool:MiniVisionModelPool", summary=SUMMARY, tasks=TASKS,
             pretraining="fashion_mnist")


@hookimpl
def register_taskpools(register):
    """Register the mini-vision task pool (accuracy with each task's fixed cosine head)."""
    register("mini-vision", "fusionbench_vision.mini.pool:MiniVisionTaskPool", summary=SUMMARY, tasks=TASKS)
