"""Model pool and task pool of the mini-vision suite (``fb run -p mini-vision``, the default of ``fb run``).

The model pool builds whatever is missing on first use (see :mod:`fusionbench_vision.mini.build`),
then serves the pretrained encoder and one expert per task from the cache. It is a data model
pool: it hands out task images and scores any encoder with a task's frozen head. The task pool
scores an encoder on every task's test split (or validation split) with that task's head.

The task pool scores with the variant of the model pool it is bound to
(:meth:`~fusionbench_core.suitekit.pools.ExpertSuiteTaskPool.bind`), so
``fb run -p mini-vision -s modelpool.quick=true`` evaluates on the quick variant's heads without
the same option being repeated for the task pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from fusionbench_core.protocols import ArchitectureSpec, Option
from fusionbench_core.suitekit.pools import ExpertSuiteModelPool, ExpertSuiteTaskPool
from torch import nn

from . import build as mb
from . import model as mm


class MiniVisionModelPool(ExpertSuiteModelPool):
    """A CLIP-architecture encoder pretrained on Fashion-MNIST and one expert per real image task."""

    suite = "mini-vision"
    builder = mb.BUILDER
    options = (
        Option("seed", int, 0, "Seed of the expert fine-tuning (the pretrained encoder is shared); "
               "default: the run's seed (fb run --seed, a sweep's seeds).", minimum=0),
        Option("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
    )

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb modelpools show mini-vision``."""
        return {"pretraining": mb.PRETRAIN_TASK, **super().describe_suite()}

    def read_config(self, directory: Path) -> Any:
        """The ``CLIPVisionConfig`` of a model directory."""
        return mm.read_config(directory)

    def backbone_from_state(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """An encoder carrying ``state`` (names with or without the ``vision_model.`` prefix)."""
        model = mm.new_encoder(self.config, seed=0)
        return mm.load_checkpoint_state(model, {k: v.to(torch.float32) for k, v in state.items()})

    def architecture(self) -> ArchitectureSpec:
        """What mixing methods need to know: the encoder's layer stack, its MLPs, and ``nn.Linear`` layers."""
        return ArchitectureSpec(layers="encoder.layers", mlps=("encoder.layers.*.mlp",), linear_types=("Linear",))

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save an encoder as ``config.json`` + ``model.safetensors`` (written to a temporary dir, renamed)."""
        mm.write_model_dir(Path(path), model.config, mm.checkpoint_state(model))


class MiniVisionTaskPool(ExpertSuiteTaskPool):
    """Accuracy and cross-entropy of an encoder on each task's test split, with the task's few-shot cosine head."""

    suite = "mini-vision"
    builder = mb.BUILDER
    default_batch_size = 256
    options = (
        Option("quick", bool, None, "Score with the quick variant's heads (default: the model pool's variant)."),
        Option("max_examples", int, 0, "Cap on scored images per task (0: the whole split).", minimum=0),
        Option("batch_size", int, 256, "Evaluation batch size.", minimum=1),
        Option("split", str, "test", "The split scored: test, or validation (to choose hyperparameters).",
               choices=("test", "validation")),
    )
