"""Model pool and task pool of the mini-text suite (``fb run -p mini-text``).

The model pool builds whatever is missing on first use (see :mod:`fusionbench_nlp.mini.build`),
then serves the pretrained all-MiniLM-L6-v2 backbone and one fully fine-tuned expert per task. It
is a data model pool: it hands out tokenised task batches and scores any backbone with a task's
frozen head. The task pool scores a backbone on every task's test split with that task's head.

A model that comes out of a mini-text pool carries the variant it was built from
(:data:`SUITE_ATTRIBUTE`), so ``-s modelpool.quick=true`` alone makes the task pool use the quick
variant's heads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.engine.expert_suite import SUITE_ATTRIBUTE  # noqa: F401  (re-exported)
from fusionbench_core.engine.expert_suite import ExpertSuiteModelPool, ExpertSuiteTaskPool
from fusionbench_core.protocols import Hyperparameter
from torch import nn

from . import build as mb
from . import model as mm

SPLITS = ("train", "validation", "test")


class MiniTextModelPool(ExpertSuiteModelPool):
    """all-MiniLM-L6-v2 and one fully fine-tuned expert per real text task, each task with its own head."""

    suite = "mini-text"
    builder = mb
    options = (
        Hyperparameter("seed", int, 0, "Seed of the expert fine-tuning (the pretrained model is shared)."),
        Hyperparameter("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
    )

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb modelpools show mini-text``."""
        return {"pretrained": mm.HUB_ID, "variants": {n: p.fingerprint() for n, p in mb.PROFILES.items()},
                "cache": str(mb.suite_dir(mb.PROFILES["full"]).parent)}

    # -- suite hooks

    def read_config(self, directory: Path) -> Any:
        """The ``BertConfig`` of a model directory (dropout off)."""
        return mm.backbone_config(directory)

    def load_backbone(self, directory: Path) -> nn.Module:
        """The backbone of a model directory, as a ``BertModel`` in eval mode."""
        return mm.load_backbone(directory)

    def backbone_from_state(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state`` (``BertModel`` names, floating point only)."""
        return mm.load_checkpoint_state(mm.new_backbone(self.config), state)

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save a backbone (config, safetensors, tokenizer) through a temporary dir renamed into place."""
        mm.write_model_dir(Path(path), model.config, mm.checkpoint_state(model),
                           tokenizer_from=mb.pretrained_dir(self.profile))

    def split_batches(self, task: str, split: str, limit: int | None, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """``(inputs, labels)`` batches of a task split; ``inputs`` is a dict of tensors padded per batch."""
        arrays = mb.task_arrays(task, split, self.profile.max_len, limit)
        for i in range(0, len(arrays), batch_size):
            labels = torch.from_numpy(np.ascontiguousarray(arrays.labels[i : i + batch_size]))
            yield arrays.batch(slice(i, i + batch_size)), labels

    def features(self, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the backbone's last hidden states over the non-padding tokens."""
        return mm.features(model, inputs)


class MiniTextTaskPool(ExpertSuiteTaskPool):
    """Accuracy and cross-entropy of a backbone on each task's test split, with the task's frozen head."""

    suite = "mini-text"
    builder = mb
    default_batch_size = 128
    options = (
        Hyperparameter("quick", bool, None, "Score with the quick variant's heads (default: the model's variant)."),
        Hyperparameter("max_examples", int, 0, "Cap on test texts per task (0: the whole test split)."),
        Hyperparameter("batch_size", int, 128, "Evaluation batch size."),
    )

    def score(self, model: nn.Module, head: nn.Linear, task: str, profile: mb.Profile) -> dict[str, float]:
        """Accuracy and loss on the task's test texts (at most ``max_examples``)."""
        return mb.evaluate(model, head, mb.task_arrays(task, "test", profile.max_len, self.max_examples),
                           self.batch_size)
