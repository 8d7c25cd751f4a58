"""Model pool and task pool of the mini-vision suite (``fb run -p mini-vision``, the default of ``fb run``).

The model pool builds whatever is missing on first use (see :mod:`fusionbench_vision.mini.build`),
then serves the pretrained encoder and one expert per task from the cache. It is a data model
pool: it hands out task images and scores any encoder with a task's frozen head. The task pool
scores an encoder on every task's test split with that task's head.

A model that comes out of a mini-vision pool carries the variant it was built from
(:data:`SUITE_ATTRIBUTE`), so ``fb run -p mini-vision -s modelpool.quick=true`` evaluates on the
quick variant's heads without the same option being repeated for the task pool.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from fusionbench_core.engine.sources import open_source
from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.protocols import PRETRAINED, DataRequest, EvaluationReport, Hyperparameter, TensorSource
from torch import nn

from . import build as mb
from . import model as mm

SUITE_ATTRIBUTE = "fusionbench_suite"
SPLITS = ("train", "validation", "test")


def _announce(profile: mb.Profile, seed: int) -> None:
    print(f"mini-vision ({profile.name}, seed {seed}) is not built yet: building it now "
          f"(once; cached under {mb.suite_dir(profile)})", file=sys.stderr)


def ensure_built(profile: mb.Profile, seed: int) -> None:
    """Build the variant for ``seed`` unless it is complete on disk."""
    if not mb.is_built(profile, seed):
        _announce(profile, seed)
        mb.build(profile, seed)


class MiniVisionModelPool:
    """A CLIP-architecture encoder pretrained on Fashion-MNIST and one expert per real image task."""

    options = (
        Hyperparameter("seed", int, 0, "Seed of the expert fine-tuning (the pretrained encoder is shared)."),
        Hyperparameter("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
    )

    def __init__(self, name: str = "mini-vision", seed: int = 0, quick: bool = False):
        self.name = name
        self.seed = seed
        self.quick = quick
        self.profile = mb.profile_for(quick)
        ensure_built(self.profile, seed)
        self.config = mm.read_config(mb.pretrained_dir(self.profile))
        self._heads: dict[str, nn.Linear] = {}
        self.forward_passes = 0

    @classmethod
    def build_suite(cls, quick: bool = False, seed: int = 0, force: bool = False) -> dict[str, Any]:
        """``fb suites build mini-vision``: train what is missing (everything with ``force``)."""
        return mb.build(mb.profile_for(quick), seed, force=force)

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb modelpools show mini-vision``."""
        return {"pretraining": mb.PRETRAIN_TASK, "variants": {n: p.fingerprint() for n, p in mb.PROFILES.items()},
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
        """The pretrained encoder or one expert, as a ``CLIPVisionModel`` in eval mode."""
        return self._tag(mm.load_encoder(self._dir(name)))

    def tensors(self, name: str) -> TensorSource:
        """Memory-mapped tensors of one model (``CLIPVisionModel`` state-dict names)."""
        return open_source(self._dir(name) / mm.MODEL_FILE)

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """An encoder carrying ``state`` (names with or without the ``vision_model.`` prefix)."""
        model = mm.new_encoder(self.config, seed=0)
        mm.load_checkpoint_state(model, {k: v.to(torch.float32) for k, v in state.items()})
        return self._tag(model.eval())

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save an encoder as ``config.json`` + ``model.safetensors`` (written to a temporary dir, renamed)."""
        mm.write_model_dir(Path(path), model.config, mm.checkpoint_state(model))

    # -- DataModelPool

    def head(self, task: str) -> nn.Linear:
        """A task's frozen head (fitted on the pretrained encoder's features)."""
        if task not in self._heads:
            self._dir(task)
            self._heads[task] = mm.load_head(mb.head_path(self.profile, task))
        return self._heads[task]

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """``(pixel_values, labels)`` batches of a task split, in a fixed order; labels None when withheld."""
        self._dir(task)
        if request.split not in SPLITS:
            raise ConfigError(f"data request: split must be one of {', '.join(SPLITS)}, got '{request.split}'")
        limit = self.profile.train_examples if request.split == "train" else None
        if request.examples is not None:
            limit = request.examples if limit is None else min(limit, request.examples)
        arrays = mb.task_arrays(task, request.split, limit)
        for i in range(0, len(arrays.labels), batch_size):
            x = mm.pixel_values(arrays.images[i : i + batch_size])
            y = torch.from_numpy(arrays.labels[i : i + batch_size]) if request.labelled else None
            yield x, y

    def logits(self, task: str, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``head_task(encoder(inputs).pooler_output)`` on the model's device."""
        dev = next(model.parameters()).device
        head = self.head(task).to(dev)
        self.forward_passes += 1
        return head(mm.features(model, inputs.to(dev)))


class MiniVisionTaskPool:
    """Accuracy and cross-entropy of an encoder on each task's test split, with the task's frozen head."""

    options = (
        Hyperparameter("quick", bool, None, "Score with the quick variant's heads (default: the model's variant)."),
        Hyperparameter("max_examples", int, 0, "Cap on test images per task (0: the whole test split)."),
        Hyperparameter("batch_size", int, 256, "Evaluation batch size."),
    )

    def __init__(self, name: str = "mini-vision", quick: bool | None = None, max_examples: int = 0, batch_size: int = 256):
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
        report = EvaluationReport()
        missing = [t for t in profile.tasks if not mb.head_path(profile, t).exists()]
        if missing:
            raise ConfigError(f"task pool '{self.name}': the head of task '{missing[0]}' is not built; "
                              f"run `fb suites build mini-vision{' --quick' if profile.name == 'quick' else ''}`")
        for task in track(list(profile.tasks), f"evaluating on {self.name}"):
            head = mm.load_head(mb.head_path(profile, task))
            arrays = mb.task_arrays(task, "test", self.max_examples)
            report.tasks[task] = mb.evaluate(model, head, arrays, self.batch_size)
        return report
