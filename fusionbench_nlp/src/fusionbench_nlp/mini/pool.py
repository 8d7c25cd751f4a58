"""Model pool and task pool of the mini-text suite (``fb run -p mini-text``).

The model pool builds whatever is missing on first use (see :mod:`fusionbench_nlp.mini.build`),
then serves the pretrained all-MiniLM-L6-v2 backbone and one fully fine-tuned expert per task. It
is a data model pool: it hands out tokenised task batches and scores any backbone with a task's
frozen head. The task pool scores a backbone on every task's test split with that task's head.

The task pool scores with the variant of the model pool it is bound to
(:meth:`~fusionbench_core.suitekit.pools.ExpertSuiteTaskPool.bind`), so ``-s modelpool.quick=true``
alone makes the task pool use the quick variant's heads.
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


class MiniTextModelPool(ExpertSuiteModelPool):
    """all-MiniLM-L6-v2 and one fully fine-tuned expert per real text task, each task with its own head."""

    suite = "mini-text"
    builder = mb.BUILDER
    options = (
        Option("seed", int, 0, "Seed of the expert fine-tuning (the pretrained model is shared); "
               "default: the run's seed (fb run --seed, a sweep's seeds).", minimum=0),
        Option("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
    )

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb modelpools show mini-text``."""
        return {"pretrained": mm.HUB_ID, **super().describe_suite()}

    def read_config(self, directory: Path) -> Any:
        """The ``BertConfig`` of a model directory (dropout off)."""
        return mm.backbone_config(directory)

    def backbone_from_state(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state`` (``BertModel`` names, floating point only)."""
        return mm.load_checkpoint_state(mm.new_backbone(self.config), state)

    def architecture(self) -> ArchitectureSpec:
        """What mixing methods need to know: ``BertModel``'s layer stack and its two MLP halves, ``nn.Linear`` layers.

        BERT has no single MLP module: ``intermediate`` (up-projection) and ``output.dense``
        (down-projection) are declared apart, so a mixing method routes each.
        """
        return ArchitectureSpec(layers="encoder.layer",
                                mlps=("encoder.layer.*.intermediate", "encoder.layer.*.output.dense"),
                                linear_types=("Linear",))

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save a backbone (config, safetensors, tokenizer) through a temporary dir renamed into place."""
        mm.write_model_dir(Path(path), model.config, mm.checkpoint_state(model),
                           tokenizer_from=self.store.pretrained_dir)


class MiniTextTaskPool(ExpertSuiteTaskPool):
    """Accuracy and cross-entropy of a backbone on each task's test split, with the task's zero-shot cosine head."""

    suite = "mini-text"
    builder = mb.BUILDER
    default_batch_size = 64
    options = (
        Option("quick", bool, None, "Score with the quick variant's heads (default: the model pool's variant)."),
        Option("max_examples", int, 0, "Cap on scored texts per task (0: the variant's test_examples).", minimum=0),
        Option("batch_size", int, 64, "Evaluation batch size (texts are batched by length).", minimum=1),
        Option("split", str, "test", "The split scored: test, or validation (to choose hyperparameters).",
               choices=("test", "validation")),
    )
