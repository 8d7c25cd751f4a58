"""Helpers shared by the GPT-2 and Flan-T5 GLUE pools: suite lookup, task selection, padding, configs."""

from __future__ import annotations

from typing import Any

import torch

from fusionbench_core.errors import ConfigError, ModelLoadError, UnknownComponentError

from .suites import SUITES, SuiteSpec


def get_suite(name: str, family: str, owner: str) -> SuiteSpec:
    """The NLP suite called ``name``, which must be of ``family`` (``gpt2`` or ``flan-t5``)."""
    known = [n for n, suite in SUITES.items() if suite.family == family]
    if name not in known:
        raise UnknownComponentError(f"{family} suite", name, known, owner=owner)
    return SUITES[name]


def select_tasks(suite: SuiteSpec, tasks: list[str] | None, owner: str) -> tuple[str, ...]:
    """The suite's tasks, or the given subset (in the given order); raise naming an unknown task."""
    if not tasks:
        return suite.tasks
    for task in tasks:
        if task not in suite.tasks:
            raise ConfigError(f"{owner}: option 'tasks' names '{task}', which is not one of {', '.join(suite.tasks)}")
    return tuple(dict.fromkeys(tasks))


def pad_batch(rows: list[list[int]], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to ``length`` (default: the longest row): ``(input_ids, attention_mask)``."""
    width = length if length is not None else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row[:width], dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def load_config(auto_config: Any, path: str) -> Any:
    """``auto_config.from_pretrained(path)`` with any failure turned into one :class:`ModelLoadError` line."""
    try:
        return auto_config.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        raise ModelLoadError(f"model config '{path}' could not be loaded ({type(exc).__name__}: {exc})") from exc
