"""Entry point ``clip_vision``: registers the CLIP suites without importing torch or transformers.

Each suite is a model pool and a task pool under one name; the targets are lazy strings naming
classes generated per suite in :mod:`fusionbench_vision.modelpool` and :mod:`fusionbench_vision.taskpool`.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

from .suites import CORRUPTIONS, SUITES


def _metadata(suite) -> dict:
    meta = {
        "tasks": suite.tasks,
        "pretrained": suite.pretrained_id,
        "models": suite.expert_ids,
        "variant": suite.variant,
    }
    if suite.robustness:
        meta["corruptions"] = CORRUPTIONS
    return meta


@hookimpl
def register_modelpools(register):
    """Register one CLIP vision model pool per suite, e.g. ``clip-vit-b32-ta8``."""
    for suite in SUITES.values():
        register(suite.name, f"fusionbench_vision.modelpool:{suite.class_stem}ModelPool",
                 summary=suite.summary, **_metadata(suite))


@hookimpl
def register_taskpools(register):
    """Register one zero-shot CLIP task pool per suite, under the model pool's name."""
    for suite in SUITES.values():
        register(suite.name, f"fusionbench_vision.taskpool:{suite.class_stem}TaskPool",
                 summary=suite.summary, **_metadata(suite))
