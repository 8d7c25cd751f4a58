"""GPT-2 on GLUE: a merged ``GPT2Model`` backbone, scored on each task with that task's own expert head.

Model pool ``gpt2-glue``: ``_pretrained_`` is ``gpt2``; the seven experts ``tanganke/gpt2_<task>`` are
``GPT2ForSequenceClassification`` checkpoints of which only the backbone (``transformer.*``) is
merged. Task pool ``gpt2-glue``: for each task, the expert's ``GPT2ForSequenceClassification`` is
rebuilt around the fused backbone (its ``score`` head read from the expert's checkpoint, its config
giving the pad id that marks the last real token) and its validation accuracy and mean
cross-entropy (``loss``) are measured (``validation_matched`` for MNLI). Inputs are the task's text
columns, tokenised as one text or a pair, truncated to the model's context, right-padded with EOS
per batch.

The model pool is also a :class:`~fusionbench_core.protocols.DataModelPool`: methods that need data
(Fisher, RegMean, AdaMerging) get GLUE batches and the expert heads' logits from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionbench_core.engine.sources import open_source
from fusionbench_core.errors import ConfigError, ModelLoadError
from fusionbench_core.hub import resolve_model
from fusionbench_core.progress import track
from fusionbench_core.protocols import (PRETRAINED, ArchitectureSpec, DataRequest, EvaluationReport, Hyperparameter,
                                        task_logits)

from .checkpoints import Architecture, CanonicalSource, save_pretrained_atomic
from .common import get_suite, load_config, pad_batch, select_tasks
from .glue import GLUE_TASKS, split_for
from .runtime import PRECISIONS, inference, load_tokenizer, pick_device, quiet_transformers
from .suites import SuiteSpec
from .tokenized import EncodedSplit, load_encoded

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


class GPT2GlueResources:
    """What pool and task pool share: paths, the architecture, the tokenizer, tokenised data, heads."""

    def __init__(self, suite: SuiteSpec):
        self.suite = suite
        self._heads: dict[str, nn.Module] = {}

    def path(self, name: str) -> str:
        """Local directory (or hub id) of ``name``'s checkpoint."""
        return resolve_model(self.suite.pretrained if name == PRETRAINED else self.suite.expert_id(name))

    @cached_property
    def architecture(self) -> Architecture:
        """``GPT2Model`` with the pretrained model's config; files may prefix names with ``transformer.``."""
        quiet_transformers()
        from transformers import AutoConfig, GPT2Model

        config = load_config(AutoConfig, self.path(PRETRAINED))
        return Architecture(GPT2Model, config, prefixes=("", "transformer."))

    @cached_property
    def tokenizer(self) -> Any:
        """The pretrained model's tokenizer, padding with EOS on the right."""
        return load_tokenizer(self.path(PRETRAINED), pad_with_eos=True)

    @property
    def max_length(self) -> int:
        """Tokens kept per input: the tokenizer's limit capped by the model's context."""
        return int(min(self.tokenizer.model_max_length, self.architecture.config.n_positions))

    def encoded(self, task: str, split: str) -> EncodedSplit:
        """``task``'s GLUE ``split`` tokenised (cached on disk)."""
        return load_encoded("pairs", task, split, self.tokenizer, self.max_length)

    def batches(self, encoded: EncodedSplit, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Padded ``{"input_ids", "attention_mask"}`` batches with their label tensors, in row order."""
        for start in range(0, len(encoded), batch_size):
            ids, mask = pad_batch(encoded.input_ids[start:start + batch_size], self.tokenizer.pad_token_id)
            yield {"input_ids": ids, "attention_mask": mask}, torch.tensor(encoded.labels[start:start + batch_size])

    def classifier(self, task: str, backbone: nn.Module) -> nn.Module:
        """``task``'s ``GPT2ForSequenceClassification`` around ``backbone``, with the expert's own head."""
        from transformers import AutoConfig, GPT2ForSequenceClassification

        expert = self.path(task)
        if task not in self._heads:
            config = load_config(AutoConfig, expert)
            if config.pad_token_id is None:
                config.pad_token_id = self.tokenizer.pad_token_id
            source = open_source(expert)
            if "score.weight" not in source.keys():
                raise ModelLoadError(f"'{expert}': no 'score.weight': not a GPT2ForSequenceClassification checkpoint")
            weight = source.get("score.weight")
            head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            with torch.no_grad():
                head.weight.copy_(weight.float())
            head.requires_grad_(False)
            with torch.device("meta"):
                shell = GPT2ForSequenceClassification(config)
            shell.score = head
            self._heads[task] = shell
        shell = self._heads[task]
        if isinstance(backbone, GPT2ForSequenceClassification):
            backbone = backbone.transformer
        shell.transformer = backbone
        shell.score.to(next(backbone.parameters()).device)
        return shell.eval()


class GPT2GlueModelPool:
    """``gpt2`` and the seven GLUE experts ``tanganke/gpt2_<task>``; the ``GPT2Model`` backbones are merged."""

    options = (
        Hyperparameter("tasks", list, None, "Experts in the pool (default: all seven GLUE tasks)."),
        Hyperparameter("max_examples", int, None, "Cap on the examples per task handed to data-using methods."),
    )

    def __init__(self, name: str = "gpt2-glue", tasks: list[str] | None = None, max_examples: int | None = None):
        self.suite: SuiteSpec = get_suite(name, "gpt2", "model pools")
        self.name = name
        self.tasks = select_tasks(self.suite, tasks, f"model pool '{name}'")
        self.max_examples = max_examples
        self.resources = GPT2GlueResources(self.suite)
        self.forward_passes = 0

    @property
    def model_names(self) -> list[str]:
        """The task names of the experts."""
        return list(self.tasks)

    def fingerprint(self) -> str:
        """Content hash of the checkpoints read (``fusionbench_core.experiments.fingerprint``): runs are reused
        only on the same weights."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        return inputs_fingerprint(models=[self.suite.pretrained, *(self.suite.expert_id(t) for t in self.tasks)])

    @property
    def has_pretrained(self) -> bool:
        """Always true: ``gpt2``."""
        return True

    def _check(self, name: str) -> None:
        if name != PRETRAINED and name not in self.tasks:
            raise ConfigError(f"model pool '{self.name}' has no model '{name}' (it has {', '.join(self.tasks)})")

    def tensors(self, name: str) -> CanonicalSource:
        """The backbone tensors of ``name`` (``transformer.`` prefix and ``score`` head stripped)."""
        self._check(name)
        path = self.resources.path(name)
        return CanonicalSource(open_source(path), self.resources.architecture, where=path)

    def load_model(self, name: str) -> nn.Module:
        """``name``'s backbone as a ``GPT2Model``."""
        source = self.tensors(name)
        return self.build_model({key: source.get(key) for key in source.keys()})

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A ``GPT2Model`` carrying ``state``."""
        return self.resources.architecture.build(state)

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save the backbone with ``save_pretrained`` (plus the tokenizer files) into ``path``."""
        save_pretrained_atomic(model, Path(path), [Path(self.resources.path(PRETRAINED))], TOKENIZER_FILES)

    def architecture(self) -> ArchitectureSpec:
        """``GPT2Model`` as it is (:class:`ArchitectureSpec`): blocks ``h``, MLPs ``h.N.mlp``.

        Its linear layers are transformers' input-major ``Conv1D``, not ``nn.Linear``; none is declared as
        a linear type, so a mixing method that needs linear layers stops with one line naming ``Conv1D``
        (upstream offers no mixing method for GPT-2 either).
        """
        return ArchitectureSpec(layers="h", mlps=("h.*.mlp",), linear_types=("Linear",))

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """GLUE batches of ``task`` (``train``, or the validation split for ``validation``/``test``)."""
        self._check(task)
        encoded = self.resources.encoded(task, split_for(task, request.split))
        caps = [n for n in (request.examples, self.max_examples) if n is not None]
        encoded = encoded.head(min(caps) if caps else None)
        for inputs, labels in self.resources.batches(encoded, batch_size):
            yield inputs, (labels if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits of ``task``'s expert head on ``model`` (a backbone)."""
        self.forward_passes += 1
        classifier = self.resources.classifier(task, model)
        device = next(model.parameters()).device
        return classifier(**{k: v.to(device) for k, v in inputs.items()}).logits


class GPT2GlueTaskPool:
    """Validation accuracy of each GLUE task's own expert head on a fused ``GPT2Model`` backbone."""

    options = (
        Hyperparameter("tasks", list, None, "Tasks to evaluate (default: all seven)."),
        Hyperparameter("max_examples", int, None, "Evaluate only the first N validation examples per task."),
        Hyperparameter("batch_size", int, 32, "Examples per forward pass."),
        Hyperparameter("device", str, "auto", "torch device; 'auto' is CUDA when present."),
        Hyperparameter("precision", str, "fp32", "fp32 (upstream's), or bf16: bfloat16 autocast on CUDA "
                       "(faster; can flip near-tie predictions).", choices=PRECISIONS),
    )

    def __init__(self, name: str = "gpt2-glue", tasks: list[str] | None = None, max_examples: int | None = None,
                 batch_size: int = 32, device: str = "auto", precision: str = "fp32"):
        if batch_size < 1:
            raise ConfigError(f"task pool '{name}': option 'batch_size' must be at least 1, got {batch_size}")
        self.suite: SuiteSpec = get_suite(name, "gpt2", "task pools")
        self.name = name
        self.tasks = select_tasks(self.suite, tasks, f"task pool '{name}'")
        self.max_examples = max_examples
        self.batch_size = batch_size
        self.device = pick_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"task pool '{name}': option 'precision' must be one of {', '.join(PRECISIONS)}, "
                              f"got '{precision}'")
        self.precision = precision
        self.resources = GPT2GlueResources(self.suite)

    def fingerprint(self) -> str:
        """Content hash of what is read: the tokenizer's checkpoint, each expert's head, GLUE."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        from .glue import GLUE_DATASET_ID

        return inputs_fingerprint(models=[self.suite.pretrained, *(self.suite.expert_id(t) for t in self.tasks)],
                                  datasets=[GLUE_DATASET_ID])

    @property
    def task_names(self) -> list[str]:
        """The tasks, in report order."""
        return list(self.tasks)

    def evaluate(self, model: Any) -> EvaluationReport:
        """Accuracy and mean cross-entropy per task on its evaluation split (first ``max_examples`` rows when capped).

        The loss is the mean over examples; upstream's is the mean of per-batch means (batch size 8),
        the same value whenever the split size is a multiple of the batch size.

        ``model`` is a backbone, or a :class:`~fusionbench_core.protocols.Predictor` (an ensemble
        that combines its members' head logits), scored through :func:`task_logits`.
        """
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
        report = EvaluationReport()
        for task in self.tasks:
            encoded = self.resources.encoded(task, GLUE_TASKS[task].eval_split).head(self.max_examples)

            def logits_of(backbone: Any, inputs: Mapping[str, torch.Tensor], task: str = task) -> torch.Tensor:
                backbone = backbone.to(self.device).eval()
                classifier = self.resources.classifier(task, backbone)
                return classifier(**{k: v.to(self.device) for k, v in inputs.items()}).logits

            correct, loss = 0, 0.0
            batches = self.resources.batches(encoded, self.batch_size)
            total_batches = -(-len(encoded) // self.batch_size)
            with inference(self.device, self.precision):
                for inputs, labels in track(batches, f"gpt2-glue {task}", total=total_batches):
                    logits = task_logits(model, logits_of, inputs).float().cpu()
                    correct += int((logits.argmax(dim=-1) == labels).sum())
                    loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count = len(encoded)
            report.tasks[task] = {"accuracy": correct / count if count else 0.0,
                                  "loss": loss / count if count else float("nan")}
        return report
