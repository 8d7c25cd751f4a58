"""Entry point ``clip_vision``: registers the CLIP suites without importing torch or transformers.

Each suite is a model pool and a task pool under one name. Every model pool is
:class:`fusionbench_vision.modelpool.CLIPVisionModelPool` and every task pool
:class:`fusionbench_vision.taskpool.CLIPZeroShotTaskPool` (``CLIPRobustnessTaskPool`` for the robustness
suites); the suite name they are built with selects the suite from :data:`fusionbench_vision.suites.SUITES`.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

from .suites import CORRUPTIONS, SUITES
from .tasks import get_task

MODELPOOL = "fusionbench_vision.modelpool:CLIPVisionModelPool"
TASKPOOL = "fusionbench_vision.taskpool:CLIPZeroShotTaskPool"
ROBUSTNESS_TASKPOOL = "fusionbench_vision.taskpool:CLIPRobustnessTaskPool"
MODELPOOL_PROVIDES = ["data", "pretrained", "architecture", "layer-stack", "linear-modules"]
"""What every CLIP model pool offers methods (``fusionbench_core.needs``); the task pools score class logits."""


def _metadata(suite, tasks: list[str]) -> dict:
    meta = {
        "tasks": tasks,
        "pretrained": suite.pretrained_id,
        "models": suite.expert_ids,
        "variant": suite.variant,
        "upstream_reference": suite.upstream_reference,
    }
    if suite.robustness:
        meta["corruptions"] = CORRUPTIONS
    if suite.unseen:
        meta["seen"], meta["unseen"] = suite.expert_tasks, suite.unseen
    return meta


def _datasets(suite) -> dict[str, str]:
    """Task → ``dataset[/config] [split], N classes, M templates`` (for ``fb taskpools show``)."""
    return {
        task: f"{spec.dataset}{'/' + spec.config if spec.config else ''} [{spec.split}], "
        f"{len(spec.classnames)} classes, {len(spec.templates)} templates"
        for task in suite.tasks
        for spec in [get_task(task)]
    }


@hookimpl
def register_modelpools(register):
    """Register the CLIP vision model pool under each suite's name, e.g. ``clip-vit-b32-ta8``."""
    for suite in SUITES.values():
        register(suite.name, MODELPOOL, summary=suite.summary, provides=MODELPOOL_PROVIDES,
                 **_metadata(suite, suite.expert_tasks))


@hookimpl
def register_taskpools(register):
    """Register the zero-shot CLIP task pool under each suite's name (the robustness pool for robustness suites)."""
    for suite in SUITES.values():
        target = ROBUSTNESS_TASKPOOL if suite.robustness else TASKPOOL
        register(suite.name, target, summary=suite.summary, datasets=_datasets(suite), provides=["class-logits"],
                 **_metadata(suite, suite.tasks))
