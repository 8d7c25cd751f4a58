"""Flan-T5 on GLUE, text to text: full fine-tunes and LoRA-16 adapters, scored by generated label words.

Model pools (``_pretrained_`` plus one expert per task, eight tasks):

- ``flan-t5-base-glue``: ``google/flan-t5-base`` and the full fine-tunes ``tanganke/flan-t5-base_glue-<task>``.
- ``flan-t5-base-glue-lora16`` / ``flan-t5-large-glue-lora16``: ``google/flan-t5-{base,large}`` and the
  PEFT LoRA (r=16) adapters ``tanganke/flan-t5-{base,large}_glue-<task>_lora-16``. For merging, an
  expert's tensors come from :class:`fusionbench_core.engine.lora.LoraSource`: base + scale·B·A,
  computed tensor by tensor as the engine asks, never a materialised merged copy. ``load_model``
  (used to evaluate one expert on its own) loads the adapter through peft and ``merge_and_unload``
  as upstream does.

The model pools are also data model pools (:class:`~fusionbench_core.protocols.DataModelPool`), as
upstream's ``flan-t5-base_glue_tta`` pools are: ``batches()`` hands out upstream's prompts (GLUE
train, or the validation split for ``validation`` and unlabelled ``test`` requests) and ``logits()``
scores each label word's first token at the first decoder step (class logits; STS-B has none).

Task pools of the same names: each GLUE row becomes the upstream prompt (:mod:`.prompts`), the model
generates with ``max_length=10``, and the decoded text is compared with the target word by exact
match (accuracy); STS-B parses both as floats and reports Spearman's ρ. Every task also reports
``glue_score`` (its accuracy, or ρ for STS-B) so that ``average.glue_score`` is the suite average
that the published tables give (there in percent).
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
                                        TensorSource)

from .checkpoints import Architecture, CanonicalSource, save_pretrained_atomic
from .common import get_suite, load_config, pad_batch, select_tasks
from .glue import GLUE_TASKS, split_for
from .prompts import GLUE_PROMPTS
from .metrics import exact_match_accuracy, parse_score, spearman_rho
from .runtime import PRECISIONS, inference, load_tokenizer, pick_device, quiet_transformers
from .suites import SuiteSpec
from .tokenized import load_encoded

GENERATION_MAX_LENGTH = 10
"""Upstream's ``generate(..., max_length=10)``: label words and one-decimal scores fit in it."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
                   "generation_config.json")


class FlanT5Checkpoints:
    """Paths and the T5 architecture of one Flan-T5 suite."""

    def __init__(self, suite: SuiteSpec):
        self.suite = suite

    def path(self, name: str) -> str:
        """Local directory (or hub id) of ``name``'s checkpoint or adapter."""
        return resolve_model(self.suite.pretrained if name == PRETRAINED else self.suite.expert_id(name))

    @cached_property
    def architecture(self) -> Architecture:
        """``T5ForConditionalGeneration`` with the pretrained model's config, tied as its checkpoint is.

        Flan-T5 checkpoints hold an ``lm_head.weight`` of their own; transformers then keeps it apart
        from ``shared.weight``, and so do we (it is merged as a tensor of its own).
        """
        quiet_transformers()
        from transformers import AutoConfig, T5ForConditionalGeneration

        path = self.path(PRETRAINED)
        architecture = Architecture(T5ForConditionalGeneration, load_config(AutoConfig, path))
        architecture.untie_as_in(open_source(path))
        return architecture

    @cached_property
    def generation_config(self) -> Any:
        """The pretrained model's generation config (or one derived from its model config)."""
        from transformers import GenerationConfig

        try:
            return GenerationConfig.from_pretrained(self.path(PRETRAINED))
        except (OSError, ValueError):
            return GenerationConfig.from_model_config(self.architecture.config)

    def build(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A ``T5ForConditionalGeneration`` carrying ``state`` and the pretrained generation config."""
        model = self.architecture.build(state)
        model.generation_config = self.generation_config
        return model


class FlanT5GlueModelPool:
    """Flan-T5 and its eight GLUE experts (full fine-tunes, or LoRA adapters merged per tensor).

    One class serves the three Flan-T5 suites; ``name`` selects the suite from :data:`.suites.SUITES`.
    """

    options = (
        Hyperparameter("tasks", list, None, "Experts in the pool (default: all eight GLUE tasks)."),
        Hyperparameter("max_examples", int, None, "Cap on the examples per task handed to data-using methods."),
    )

    def __init__(self, name: str = "flan-t5-base-glue", tasks: list[str] | None = None,
                 max_examples: int | None = None):
        self.suite: SuiteSpec = get_suite(name, "flan-t5", "model pools")
        self.name = name
        self.tasks = select_tasks(self.suite, tasks, f"model pool '{self.name}'")
        self.max_examples = max_examples
        self.checkpoints = FlanT5Checkpoints(self.suite)
        self.forward_passes = 0

    @property
    def model_names(self) -> list[str]:
        """The task names of the experts."""
        return list(self.tasks)

    def fingerprint(self) -> str:
        """Content hash of the checkpoints and adapters read (``fusionbench_core.experiments.fingerprint``):
        runs are reused only on the same weights."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        return inputs_fingerprint(models=[self.suite.pretrained, *(self.suite.expert_id(t) for t in self.tasks)])

    @property
    def has_pretrained(self) -> bool:
        """Always true."""
        return True

    @cached_property
    def _pretrained_source(self) -> CanonicalSource:
        path = self.checkpoints.path(PRETRAINED)
        return CanonicalSource(open_source(path), self.checkpoints.architecture, where=path)

    def tensors(self, name: str) -> TensorSource:
        """``name``'s tensors; a LoRA expert yields base + scale·B·A tensor by tensor."""
        if name == PRETRAINED:
            return self._pretrained_source
        if name not in self.tasks:
            raise ConfigError(f"model pool '{self.name}' has no model '{name}' (it has {', '.join(self.tasks)})")
        path = self.checkpoints.path(name)
        if self.suite.lora:
            from fusionbench_core.engine.lora import LoraSource

            if not Path(path, "adapter_config.json").exists():
                raise ModelLoadError(f"'{path}': no adapter_config.json (expected a PEFT LoRA adapter)")
            return LoraSource(self._pretrained_source, path)
        return CanonicalSource(open_source(path), self.checkpoints.architecture, where=path)

    def load_model(self, name: str) -> nn.Module:
        """``name`` as a ``T5ForConditionalGeneration``; a LoRA expert goes through peft's ``merge_and_unload``."""
        if name == PRETRAINED or not self.suite.lora:
            source = self.tensors(name)
            return self.build_model({key: source.get(key) for key in source.keys()})
        if name not in self.tasks:
            raise ConfigError(f"model pool '{self.name}' has no model '{name}' (it has {', '.join(self.tasks)})")
        from peft import PeftModel

        base = self.load_model(PRETRAINED)
        path = self.checkpoints.path(name)
        try:
            merged = PeftModel.from_pretrained(base, path).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
            raise ModelLoadError(f"LoRA adapter '{path}' could not be loaded ({type(exc).__name__}: {exc})") from exc
        return merged.eval()

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A ``T5ForConditionalGeneration`` carrying ``state``."""
        return self.checkpoints.build(state)

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save with ``save_pretrained`` (plus tokenizer and generation files) into ``path``."""
        save_pretrained_atomic(model, Path(path), [Path(self.checkpoints.path(PRETRAINED))], TOKENIZER_FILES)

    def architecture(self) -> ArchitectureSpec:
        """``T5ForConditionalGeneration`` for the mixing methods (:class:`ArchitectureSpec`).

        The MLPs are the feed-forward modules of every block, as upstream's Flan-T5 WEMoE up-scales them:
        ``encoder.block.N.layer.1.DenseReluDense`` and ``decoder.block.N.layer.2.DenseReluDense`` (gated
        or not, each takes the hidden states). The linear layers are the ``nn.Linear`` modules of the
        whole model, ``lm_head`` included, as upstream's SMILE takes every ``nn.Linear``. T5 has two layer
        stacks (encoder and decoder), so none is declared and depth up-scaling does not apply.
        """
        return ArchitectureSpec(layers=None, mlps=("encoder.block.*.layer.1.DenseReluDense",
                                                   "decoder.block.*.layer.2.DenseReluDense"),
                                linear_types=("Linear",))

    # -- DataModelPool ----------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> Any:
        """The pretrained model's tokenizer."""
        return load_tokenizer(self.checkpoints.path(PRETRAINED))

    def _label_tokens(self, task: str) -> list[int]:
        """The first token id of each of ``task``'s label words (distinct, or the task has no class logits)."""
        words = GLUE_PROMPTS[task].targets
        if not words:
            raise ConfigError(f"model pool '{self.name}': task '{task}' is a regression (STS-B) and has no class "
                              "logits; leave it out of data-using methods with -s modelpool.tasks=...")
        firsts = [self.tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
        if len(set(firsts)) != len(firsts):
            raise ModelLoadError(f"model pool '{self.name}': the label words of '{task}' ({', '.join(words)}) "
                                 "share a first token under this tokenizer")
        return firsts

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """Prompt batches of ``task`` (``train``, or the validation split for ``validation``/``test``).

        Inputs are ``{"input_ids", "attention_mask"}`` of upstream's prompts, padded per batch; labels
        are class indices (None when ``request.labelled`` is false).
        """
        if task not in self.tasks:
            raise ConfigError(f"model pool '{self.name}' has no model '{task}' (it has {', '.join(self.tasks)})")
        tokenizer = self.tokenizer
        encoded = load_encoded("prompts", task, split_for(task, request.split), tokenizer,
                               int(min(tokenizer.model_max_length, 1 << 20)))
        caps = [n for n in (request.examples, self.max_examples) if n is not None]
        encoded = encoded.head(min(caps) if caps else None)
        for start in range(0, len(encoded), batch_size):
            ids, mask = pad_batch(encoded.input_ids[start:start + batch_size], tokenizer.pad_token_id)
            labels = torch.tensor(encoded.labels[start:start + batch_size]) if request.labelled else None
            yield {"input_ids": ids, "attention_mask": mask}, labels

    def logits(self, task: str, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits: the first decoder step's scores of the first token of each of ``task``'s label words.

        Greedy generation starts with that step, so their argmax is the label word generation would
        begin with. STS-B (a regression) has none.
        """
        label_tokens = self._label_tokens(task)
        self.forward_passes += 1
        device = next(model.parameters()).device
        config = getattr(model, "config", None) or self.checkpoints.architecture.config
        start_id = getattr(config, "decoder_start_token_id", None)
        start_id = self.tokenizer.pad_token_id if start_id is None else start_id
        ids = inputs["input_ids"].to(device)
        decoder = torch.full((ids.shape[0], 1), start_id, dtype=torch.long, device=device)
        out = model(input_ids=ids, attention_mask=inputs["attention_mask"].to(device), decoder_input_ids=decoder)
        return out.logits[:, 0, label_tokens]


class FlanT5GlueTaskPool:
    """Exact-match accuracy of generated GLUE label words (Spearman's ρ for STS-B), per task.

    One class serves the three Flan-T5 suites; ``name`` selects the suite (and so the tokenizer).
    """

    options = (
        Hyperparameter("tasks", list, None, "Tasks to evaluate (default: all eight)."),
        Hyperparameter("max_examples", int, None, "Evaluate only the first N validation examples per task."),
        Hyperparameter("batch_size", int, 32, "Examples per generate() call."),
        Hyperparameter("device", str, "auto", "torch device; 'auto' is CUDA when present."),
        Hyperparameter("precision", str, "fp32", "fp32 (upstream's), or bf16: bfloat16 autocast on CUDA "
                       "(faster; can flip near-tie predictions).", choices=PRECISIONS),
        Hyperparameter("upstream_padding", bool, False,
                       "Pad every input to the tokenizer's max length with the mask transformers 4 inferred from "
                       "the pads, as upstream's published runs did (slower, same outputs). Default: per-batch "
                       "padding, masked."),
    )

    def __init__(self, name: str = "flan-t5-base-glue", tasks: list[str] | None = None,
                 max_examples: int | None = None, batch_size: int = 32, device: str = "auto",
                 precision: str = "fp32", upstream_padding: bool = False):
        self.suite: SuiteSpec = get_suite(name, "flan-t5", "task pools")
        self.name = name
        if batch_size < 1:
            raise ConfigError(f"task pool '{self.name}': option 'batch_size' must be at least 1, got {batch_size}")
        self.tasks = select_tasks(self.suite, tasks, f"task pool '{self.name}'")
        self.max_examples = max_examples
        self.batch_size = batch_size
        self.device = pick_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"task pool '{name}': option 'precision' must be one of {', '.join(PRECISIONS)}, "
                              f"got '{precision}'")
        self.precision = precision
        self.upstream_padding = upstream_padding
        self.checkpoints = FlanT5Checkpoints(self.suite)

    def fingerprint(self) -> str:
        """Content hash of what is read: the pretrained checkpoint (tokenizer, configuration) and GLUE."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        from .glue import GLUE_DATASET_ID

        return inputs_fingerprint(models=[self.suite.pretrained], datasets=[GLUE_DATASET_ID])

    @property
    def task_names(self) -> list[str]:
        """The tasks, in report order."""
        return list(self.tasks)

    @cached_property
    def tokenizer(self) -> Any:
        """The pretrained model's tokenizer (all Flan-T5 sizes share it)."""
        return load_tokenizer(self.checkpoints.path(PRETRAINED))

    @property
    def max_length(self) -> int:
        """Input tokens kept per prompt."""
        return int(min(self.tokenizer.model_max_length, 1 << 20))

    def generate(self, model: nn.Module, input_ids: list[list[int]]) -> list[str]:
        """Generated texts for tokenised prompts, batch by batch, in order."""
        tokenizer = self.tokenizer
        config = getattr(model, "config", None)
        start_id = getattr(config, "decoder_start_token_id", None)
        if start_id is None:
            start_id = tokenizer.pad_token_id
        texts: list[str] = []
        total = -(-len(input_ids) // self.batch_size)
        starts = range(0, len(input_ids), self.batch_size)
        with inference(self.device, self.precision):
            for start in track(starts, "flan-t5 generate", total=total):
                rows = input_ids[start:start + self.batch_size]
                length = self.max_length if self.upstream_padding else None
                ids, mask = pad_batch(rows, tokenizer.pad_token_id, length)
                if self.upstream_padding:
                    # Upstream passes no mask; transformers 4, which its published runs used, then
                    # infers one from the pad tokens. transformers 5 no longer does for encoder-decoders.
                    mask = (ids != tokenizer.pad_token_id).long()
                out = model.generate(ids.to(self.device), attention_mask=mask.to(self.device),
                                     max_length=GENERATION_MAX_LENGTH, do_sample=False, num_beams=1,
                                     decoder_start_token_id=start_id, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                texts.extend(tokenizer.batch_decode(out.cpu(), skip_special_tokens=True))
        return texts

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Per task: ``accuracy`` (exact match) or ``spearman_rho`` (STS-B), and ``glue_score``."""
        if not callable(getattr(model, "generate", None)):
            raise ConfigError(f"task pool '{self.name}' scores generated text, but the fused model "
                              f"({type(model).__name__}) has no generate(); class-logit ensembles do not apply")
        model = model.to(self.device).eval()
        report = EvaluationReport()
        for task in self.tasks:
            encoded = load_encoded("prompts", task, GLUE_TASKS[task].eval_split, self.tokenizer,
                                   self.max_length).head(self.max_examples)
            predictions = self.generate(model, encoded.input_ids)
            if GLUE_TASKS[task].label_names:
                value = exact_match_accuracy(predictions, encoded.targets)
                report.tasks[task] = {"accuracy": value, "glue_score": value}
            else:
                rho = spearman_rho([parse_score(p) for p in predictions], [parse_score(t) for t in encoded.targets])
                report.tasks[task] = {"spearman_rho": rho, "glue_score": rho}
        return report

