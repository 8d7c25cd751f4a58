"""Entry point ``mini_text``: registers the offline mini-text suite without importing torch.

The model pool and the task pool share the name ``mini-text``; their targets are lazy strings,
so ``fb modelpools`` lists the suite without loading anything heavy.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

TASKS = ["sentiment", "tweet_device", "fortune_topic", "language_id", "supersense", "austen_novel",
         "bible_section", "gloss_match"]
SUMMARY = "Offline CPU suite: all-MiniLM-L6-v2, zero-shot cosine heads, 8 fully fine-tuned real text experts"


@hookimpl
def register_modelpools(register):
    """Register the mini-text model pool (builds itself on first use)."""
    register("mini-text", "fusionbench_nlp.mini.pool:MiniTextModelPool", summary=SUMMARY, tasks=TASKS,
             pretrained="sentence-transformers/all-MiniLM-L6-v2")


@hookimpl
def register_taskpools(register):
    """Register the mini-text task pool (test accuracy with each task's frozen head)."""
    register("mini-text", "fusionbench_nlp.mini.pool:MiniTextTaskPool", summary=SUMMARY, tasks=TASKS)
