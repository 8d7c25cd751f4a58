"""The NLP suites as data: hub ids, tasks and evaluation splits (no torch, no transformers).

The registration module reads this table (and :meth:`SuiteSpec.describe` for the listings), so
listing suites never imports a model library. The ids are those of upstream FusionBench (version
0.2.33); they resolve through :func:`fusionbench_core.hub.resolve_model`, i.e. to
``$FUSIONBENCH_MODEL_ROOT/<id>`` when present.
"""

from __future__ import annotations

from dataclasses import dataclass

from .glue import GLUE_TASKS

GPT2_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2")
"""The seven GLUE tasks with a GPT-2 classification expert."""

FLAN_T5_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")
"""The eight GLUE tasks with a Flan-T5 text-to-text expert (STS-B included)."""


@dataclass(frozen=True)
class SuiteSpec:
    """One suite: a pretrained model, one expert per task, and how the experts are stored."""

    name: str
    family: str
    """``"gpt2"`` (classification heads on a merged backbone) or ``"flan-t5"`` (text-to-text)."""
    pretrained: str
    expert_pattern: str
    """Hub id of a task's expert with ``{task}`` in place of the task name."""
    tasks: tuple[str, ...]
    lora: bool = False
    """Whether the experts are PEFT LoRA adapters on :attr:`pretrained` rather than full checkpoints."""
    summary: str = ""

    def expert_id(self, task: str) -> str:
        """The hub id of ``task``'s expert."""
        return self.expert_pattern.format(task=task)

    @property
    def hub_ids(self) -> dict[str, str]:
        """``{"_pretrained_": id, task: id, ...}``."""
        return {"_pretrained_": self.pretrained, **{task: self.expert_id(task) for task in self.tasks}}

    def describe(self) -> dict[str, object]:
        """Registered with the suite: what ``fb modelpools show`` / ``fb taskpools show`` print (no torch)."""
        return {
            "family": self.family,
            "pretrained": self.pretrained,
            "experts": "LoRA-16 adapters (PEFT), merged per tensor as base + scale·B·A" if self.lora
            else "full fine-tunes",
            "hub_ids": self.hub_ids,
            "datasets": {task: f"glue/{GLUE_TASKS[task].config}, split {GLUE_TASKS[task].eval_split}"
                         for task in self.tasks},
            "metric": ("validation accuracy of each task's own classification head on the fused backbone"
                       if self.family == "gpt2" else
                       "exact-match accuracy of generated label words (max_length 10); STS-B: Spearman rho"),
        }


SUITES: dict[str, SuiteSpec] = {
    "gpt2-glue": SuiteSpec(
        "gpt2-glue", "gpt2", "gpt2", "tanganke/gpt2_{task}", GPT2_TASKS,
        summary="GPT-2 backbone + 7 GLUE classification experts (own heads)"),
    "flan-t5-base-glue": SuiteSpec(
        "flan-t5-base-glue", "flan-t5", "google/flan-t5-base", "tanganke/flan-t5-base_glue-{task}", FLAN_T5_TASKS,
        summary="Flan-T5-base + 8 full GLUE fine-tunes, text-to-text"),
    "flan-t5-base-glue-lora16": SuiteSpec(
        "flan-t5-base-glue-lora16", "flan-t5", "google/flan-t5-base", "tanganke/flan-t5-base_glue-{task}_lora-16",
        FLAN_T5_TASKS, lora=True, summary="Flan-T5-base + 8 GLUE LoRA-16 adapters, text-to-text"),
    "flan-t5-large-glue-lora16": SuiteSpec(
        "flan-t5-large-glue-lora16", "flan-t5", "google/flan-t5-large", "tanganke/flan-t5-large_glue-{task}_lora-16",
        FLAN_T5_TASKS, lora=True, summary="Flan-T5-large + 8 GLUE LoRA-16 adapters, text-to-text"),
}
"""Every NLP suite by name; the model pool and the task pool share the name."""
