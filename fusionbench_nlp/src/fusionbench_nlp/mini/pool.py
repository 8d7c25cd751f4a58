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

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.engine.sources import open_source
from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.protocols import PRETRAINED, DataRequest, EvaluationReport, Hyperparameter, TensorSource
from torch import nn

from . import build as mb
from . import model as mm

SUITE_ATTRIBUTE = "fusionbench_suite"
SPLITS = ("train", "validation", "test")


def ensure_built(profile: mb.Profile, seed: int) -> None:
    """Build the variant for ``seed`` unless it is complete on disk."""
    if not mb.is_built(profile, seed):
        print(f"mini-text ({profile.name}, seed {seed}) is not built yet: building it now "
              f"(once; cached under {mb.suite_dir(profile)})", file=sys.stderr)
        mb.build(profile, seed)


class MiniTextModelPool:
    """all-MiniLM-L6-v2 and one fully fine-tuned expert per real text task, each task with its own head."""

    options = (
        Hyperparameter("seed", int, 0, "Seed of the expert fine-tuning (the pretrained model is shared)."),
        Hyperparameter("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
    )

    def __init__(self, name: str = "mini-text", seed: int = 0, quick: bool = False):
        self.name = name
        self.seed = seed
        self.quick = quick
        self.profile = mb.profile_for(quick)
        ensure_built(self.profile, seed)
        self.config = mm.backbone_config(mb.pretrained_dir(self.profile))
        self._heads: dict[str, nn.Linear] = {}
        self.forward_passes = 0

    @classmethod
    def build_suite(cls, quick: bool = False, seed: int = 0, force: bool = False) -> dict[str, Any]:
        """``fb suites build mini-text``: train what is missing (everything with ``force``)."""
        return mb.build(mb.profile_for(quick), seed, force=force)

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb modelpools show mini-text``."""
        return {"pretrained": mm.HUB_ID, "variants": {n: p.fingerprint() for n, p in mb.PROFILES.items()},
                "cache": str(mb.suite_dir(mb.PROFILES["full"]).parent)}

    # -- ModelPool

    @property
    def model_names(self) -> list[str]:
        """The task names, one expert each."""
        return list(self.profile.tasks)

    @property
    def has_pretrained(self) -> bool:
        """Always true."""
        return True

    def _dir(self, name: str) -> Path:
        if name == PRETRAINED:
            return mb.pretrained_dir(self.profile)
        if name not in self.profile.tasks:
            raise UnknownComponentError("model", name, [PRETRAINED, *self.profile.tasks], owner=f"model pool '{self.name}'")
        return mb.expert_dir(self.profile, self.seed, name)

    def _tag(self, model: nn.Module) -> nn.Module:
        setattr(model, SUITE_ATTRIBUTE, {"quick": self.quick, "seed": self.seed})
        return model

    def load_model(self, name: str) -> nn.Module:
        """The pretrained backbone or one expert, as a ``BertModel`` in eval mode."""
        return self._tag(mm.load_backbone(self._dir(name)))

    def tensors(self, name: str) -> TensorSource:
        """Memory-mapped tensors of one backbone (``BertModel`` names, floating point only)."""
        return open_source(self._dir(name) / mm.MODEL_FILE)

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state``."""
        model = mm.new_backbone(self.config)
        mm.load_checkpoint_state(model, state)
        return self._tag(model.eval())

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save a backbone (config, safetensors, tokenizer) through a temporary dir renamed into place."""
        mm.write_model_dir(Path(path), model.config, mm.checkpoint_state(model),
                           tokenizer_from=mb.pretrained_dir(self.profile))

    # -- DataModelPool

    def head(self, task: str) -> nn.Linear:
        """A task's frozen head (fitted on the pretrained backbone's features)."""
        if task not in self._heads:
            self._dir(task)
            self._heads[task] = mm.load_head(mb.head_path(self.profile, task))
        return self._heads[task]

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """``(inputs, labels)`` batches of a task split in a fixed order; ``inputs`` is a dict of tensors."""
        self._dir(task)
        if request.split not in SPLITS:
            raise ConfigError(f"data request: split must be one of {', '.join(SPLITS)}, got '{request.split}'")
        limit = self.profile.train_examples if request.split == "train" else None
        if request.examples is not None:
            limit = request.examples if limit is None else min(limit, request.examples)
        arrays = mb.task_arrays(task, request.split, self.profile.max_len, limit)
        for i in range(0, len(arrays), batch_size):
            labels = torch.from_numpy(np.ascontiguousarray(arrays.labels[i : i + batch_size]))
            yield arrays.batch(slice(i, i + batch_size)), (labels if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``head_task(mean_pool(backbone(inputs)))`` on the model's device."""
        dev = next(model.parameters()).device
        head = self.head(task).to(dev)
        self.forward_passes += 1
        return head(mm.features(model, {k: v.to(dev) for k, v in inputs.items()}))


class MiniTextTaskPool:
    """Accuracy and cross-entropy of a backbone on each task's test split, with the task's frozen head."""

    options = (
        Hyperparameter("quick", bool, None, "Score with the quick variant's heads (default: the model's variant)."),
        Hyperparameter("max_examples", int, 0, "Cap on test texts per task (0: the whole test split)."),
        Hyperparameter("batch_size", int, 128, "Evaluation batch size."),
    )

    def __init__(self, name: str = "mini-text", quick: bool | None = None, max_examples: int = 0, batch_size: int = 128):
        self.name = name
        self.quick = quick
        self.max_examples = max_examples or None
        self.batch_size = batch_size

    @property
    def task_names(self) -> list[str]:
        """The task names of the suite."""
        return list(mb.profile_for(bool(self.quick)).tasks)

    def _profile(self, model: nn.Module) -> mb.Profile:
        if self.quick is not None:
            return mb.profile_for(self.quick)
        tag = getattr(model, SUITE_ATTRIBUTE, None)
        return mb.profile_for(bool(tag["quick"]) if tag else False)

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Score ``model`` on every task's test split."""
        from fusionbench_core.progress import track

        profile = self._profile(model)
        missing = [t for t in profile.tasks if not mb.head_path(profile, t).exists()]
        if missing:
            raise ConfigError(f"task pool '{self.name}': the head of task '{missing[0]}' is not built; "
                              f"run `fb suites build mini-text{' --quick' if profile.name == 'quick' else ''}`")
        report = EvaluationReport()
        for task in track(list(profile.tasks), f"evaluating on {self.name}"):
            head = mm.load_head(mb.head_path(profile, task))
            arrays = mb.task_arrays(task, "test", profile.max_len, self.max_examples)
            report.tasks[task] = mb.evaluate(model, head, arrays, self.batch_size)
        return report
