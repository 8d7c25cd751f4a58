"""Registers the NLP suites with FusionBench (lazily: importing this imports neither torch nor transformers)."""

from __future__ import annotations

from fusionbench_core import hookimpl

from .suites import SUITES

_CLASSES = {
    "gpt2-glue": ("gpt2_glue:GPT2GlueModelPool", "gpt2_glue:GPT2GlueTaskPool"),
    "flan-t5-base-glue": ("flan_t5_glue:FlanT5GlueModelPool", "flan_t5_glue:FlanT5GlueTaskPool"),
    "flan-t5-base-glue-lora16": ("flan_t5_glue:FlanT5BaseGlueLora16ModelPool",
                                 "flan_t5_glue:FlanT5BaseGlueLora16TaskPool"),
    "flan-t5-large-glue-lora16": ("flan_t5_glue:FlanT5LargeGlueLora16ModelPool",
                                  "flan_t5_glue:FlanT5LargeGlueLora16TaskPool"),
}


def _metadata(name: str) -> dict:
    suite = SUITES[name]
    return {"tasks": list(suite.tasks), "hub_ids": suite.hub_ids, "lora": suite.lora}


@hookimpl
def register_modelpools(register):
    """Register ``gpt2-glue``, ``flan-t5-base-glue``, ``flan-t5-base-glue-lora16``, ``flan-t5-large-glue-lora16``."""
    for name, (pool, _) in _CLASSES.items():
        register(name, f"fusionbench_nlp.{pool}", summary=SUITES[name].summary, **_metadata(name))


@hookimpl
def register_taskpools(register):
    """Register the task pools of the same four suites."""
    for name, (_, taskpool) in _CLASSES.items():
        register(name, f"fusionbench_nlp.{taskpool}", summary=SUITES[name].summary, **_metadata(name))
