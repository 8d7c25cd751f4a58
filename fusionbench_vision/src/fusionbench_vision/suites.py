"""The catalogue of CLIP suites: backbones, task lists, expert hub ids and suite names (no torch).

A suite is a model pool and a task pool registered under one name, e.g. ``clip-vit-b32-ta8``:
``openai/clip-vit-base-patch32`` as ``_pretrained_`` plus the experts
``tanganke/clip-vit-base-patch32_<task>`` for the eight tasks of Task Arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionbench_core.errors import UnknownComponentError

BACKBONES = {
    "b32": "openai/clip-vit-base-patch32",
    "b16": "openai/clip-vit-base-patch16",
    "l14": "openai/clip-vit-large-patch14",
}
"""Short backbone name → hub id of the pretrained CLIP model (text and vision towers, processor)."""

TA8 = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
TALL14 = TA8 + ["oxford_flowers102", "pcam", "fer2013", "oxford-iiit-pet", "stl10", "cifar100"]
TALL20 = TALL14 + ["cifar10", "food101", "fashion_mnist", "emnist_letters", "kmnist", "rendered-sst2"]
ROBUSTNESS_TASKS = ["stanford-cars", "eurosat", "resisc45", "gtsrb"]
"""The four tasks whose test sets upstream corrupts for the robustness experiments."""

GENERALIZATION = {
    "exp1": (["sun397", "stanford-cars", "resisc45", "dtd", "svhn", "gtsrb"], ["mnist", "eurosat"]),
    "exp2": (["sun397", "stanford-cars", "gtsrb", "eurosat", "dtd", "mnist"], ["resisc45", "svhn"]),
}
"""Upstream's generalisation experiments: (seen tasks, with experts; unseen tasks, evaluated only)."""

TASK_LISTS = {"ta8": TA8, "tall10": TALL20[:10], "tall12": TALL20[:12], "tall14": TALL14, "tall16": TALL20[:16],
              "tall18": TALL20[:18], "tall20": TALL20, "robustness": ROBUSTNESS_TASKS,
              **{name: seen + unseen for name, (seen, unseen) in GENERALIZATION.items()}}

CORRUPTIONS = ["motion_blur", "impulse_noise", "gaussian_noise", "pixelate", "spatter", "contrast", "jpeg_compression"]
"""The seven corruptions of the robustness suite, in upstream's names (also its hub split names)."""

CORRUPTION_SOURCES = ("hub", "generated")
"""Where corrupted test images come from: upstream's pre-corrupted hub splits, or generated on the fly."""


@dataclass(frozen=True)
class SuiteSpec:
    """One CLIP suite: which backbone, which tasks, which experts."""

    name: str
    backbone: str
    """``b32``, ``b16`` or ``l14``."""
    task_list: str
    """A key of :data:`TASK_LISTS`: ``ta8``, ``tall10`` … ``tall20``, ``robustness``, ``exp1`` or ``exp2``."""
    variant: str = "full"
    """``full`` (fully fine-tuned vision towers) or ``lora16`` (LoRA r=16 adapters on the vision tower)."""

    @property
    def pretrained_id(self) -> str:
        """Hub id of the pretrained CLIP model."""
        return BACKBONES[self.backbone]

    @property
    def tasks(self) -> list[str]:
        """The tasks evaluated, in report order (seen, then unseen, for a generalisation suite)."""
        return list(TASK_LISTS[self.task_list])

    @property
    def unseen(self) -> list[str]:
        """Tasks evaluated without an expert in the pool (generalisation suites; empty otherwise)."""
        return list(GENERALIZATION[self.task_list][1]) if self.task_list in GENERALIZATION else []

    @property
    def expert_tasks(self) -> list[str]:
        """The tasks with an expert in the model pool."""
        return [task for task in self.tasks if task not in self.unseen]

    @property
    def upstream_reference(self) -> bool:
        """Whether upstream FusionBench has this suite (it has robustness for ViT-B/32 only)."""
        return not (self.robustness and self.backbone != "b32")

    @property
    def robustness(self) -> bool:
        """Whether the task pool evaluates corrupted test sets."""
        return self.task_list == "robustness"

    def expert_id(self, task: str) -> str:
        """Hub id of the expert fine-tuned on ``task``."""
        stem = self.pretrained_id.split("/", 1)[1]
        suffix = "_lora-16" if self.variant == "lora16" else ""
        return f"tanganke/{stem}_{task}{suffix}"

    @property
    def expert_ids(self) -> dict[str, str]:
        """Task → expert hub id."""
        return {task: self.expert_id(task) for task in self.expert_tasks}

    @property
    def summary(self) -> str:
        """One line for ``fb modelpools`` / ``fb taskpools``."""
        kind = {"full": "experts", "lora16": "LoRA-16 experts"}[self.variant]
        what = "robustness (7 corruptions)" if self.robustness else self.task_list.upper()
        if self.unseen:
            what = f"generalisation {self.task_list} (unseen: {', '.join(self.unseen)})"
        note = "" if self.upstream_reference else " (no upstream reference)"
        return f"CLIP {self.pretrained_id} + {len(self.expert_tasks)} {kind}, {what}{note}"


def _build() -> dict[str, SuiteSpec]:
    suites: dict[str, SuiteSpec] = {}
    for backbone in BACKBONES:
        for task_list in ("ta8", "tall10", "tall12", "tall14", "tall16", "tall18", "tall20", "robustness"):
            name = f"clip-vit-{backbone}-{task_list}"
            suites[name] = SuiteSpec(name, backbone, task_list)
    for experiment in GENERALIZATION:  # upstream runs these on ViT-B/32 only
        name = f"clip-vit-b32-generalization-{experiment}"
        suites[name] = SuiteSpec(name, "b32", experiment)
    suites["clip-vit-b16-ta8-lora16"] = SuiteSpec("clip-vit-b16-ta8-lora16", "b16", "ta8", "lora16")
    return suites


SUITES: dict[str, SuiteSpec] = _build()
"""Every CLIP suite by name."""


def get_suite(name: str, owner: str) -> SuiteSpec:
    """The CLIP suite called ``name``; a did-you-mean error naming ``owner`` (e.g. "model pool") if unknown."""
    if name not in SUITES:
        raise UnknownComponentError("CLIP suite", name, SUITES, owner=owner)
    return SUITES[name]
