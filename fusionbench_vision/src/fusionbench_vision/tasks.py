"""The CLIP classification tasks as data: test set, split, columns, class names and prompt templates.

The facts live in ``data/tasks.json`` and ``data/classnames/<task>.txt`` (one class per line, in
label order). Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from fusionbench_core.errors import UnknownComponentError


@dataclass(frozen=True)
class TaskSpec:
    """One image-classification task of the CLIP suites."""

    name: str
    dataset: str
    """Hub id of the dataset (looked up under ``FUSIONBENCH_DATA_ROOT`` first)."""
    split: str
    """The split evaluated (the test split, ``validation`` for Food-101)."""
    config: str | None
    """The dataset configuration name, e.g. ``cropped_digits`` for SVHN."""
    image_column: str
    label_column: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    """Prompt templates with ``{c}`` where the class name goes."""

    train_split: str = "train"

    def prompts(self, classname: str) -> list[str]:
        """Every template filled with ``classname``."""
        return [template.replace("{c}", classname) for template in self.templates]


def _data_file(*parts: str) -> str:
    return resources.files("fusionbench_vision").joinpath("data", *parts).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def all_tasks() -> dict[str, TaskSpec]:
    """Every known task, keyed by its suite name (``stanford-cars``, ``oxford_flowers102``, ...)."""
    raw = json.loads(_data_file("tasks.json"))
    shared = raw["templates"]
    tasks: dict[str, TaskSpec] = {}
    for name, entry in raw["tasks"].items():
        templates = entry["templates"]
        if isinstance(templates, str):
            templates = shared[templates]
        classnames = [line for line in _data_file("classnames", f"{name}.txt").splitlines() if line.strip()]
        tasks[name] = TaskSpec(
            name=name,
            dataset=entry["dataset"],
            split=entry["split"],
            config=entry.get("config"),
            image_column=entry.get("image_column", "image"),
            label_column=entry.get("label_column", "label"),
            classnames=tuple(classnames),
            templates=tuple(templates),
        )
    return tasks


CLASSNAME_SETS = ("fixed", "upstream")
"""``fixed``: our class names; ``upstream``: upstream FusionBench's, byte for byte (two differ)."""

UPSTREAM_CLASSNAMES = {"cifar100": {26: "cra"}, "oxford_flowers102": {59: "pink-yellow dahlia?"}}
"""Where upstream's class names differ from ours (task → label index → upstream's string):
CIFAR-100's "crab" is "cra" there (a typo), Flowers102's "pink-yellow dahlia" carries a "?"."""


def get_task(name: str, classnames: str = "fixed") -> TaskSpec:
    """The task called ``name`` with our class names or upstream's (``classnames``); did-you-mean if unknown."""
    tasks = all_tasks()
    if name not in tasks:
        raise UnknownComponentError("CLIP task", name, tasks)
    if classnames not in CLASSNAME_SETS:
        raise UnknownComponentError("class-name set", classnames, CLASSNAME_SETS)
    spec = tasks[name]
    if classnames == "upstream" and name in UPSTREAM_CLASSNAMES:
        names = list(spec.classnames)
        for index, upstream in UPSTREAM_CLASSNAMES[name].items():
            names[index] = upstream
        spec = replace(spec, classnames=tuple(names))
    return spec
