"""The text-to-text prompts the Flan-T5 GLUE experts were fine-tuned with (facts of upstream FusionBench).

Each task turns a GLUE row into an input text and a target text. The input wordings are kept
character for character, spelling slips ("Answere") included: the experts were trained on exactly
these strings, and exact-match evaluation compares generated text with the target words below.
Targets are the label word of the class index; STS-B's target is its score written with one decimal
(``"{:.1f}"``), e.g. ``3.8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptTemplate:
    """Input wording (``str.format`` fields named after GLUE columns) and the target words by label."""

    input_text: str
    targets: tuple[str, ...]
    """Target word of each class index; empty for STS-B, whose target is the formatted score."""

    def render(self, row: dict[str, Any]) -> tuple[str, str]:
        """``(input text, target text)`` of one GLUE row (a dict with the text columns and ``label``)."""
        text = self.input_text.format(**row)
        label = row["label"]
        if not self.targets:
            return text, f"{float(label):.1f}"
        index = int(label)
        # GLUE marks hidden labels with -1; upstream gives such rows an empty target.
        return text, self.targets[index] if 0 <= index < len(self.targets) else ""


GLUE_PROMPTS: dict[str, PromptTemplate] = {
    "cola": PromptTemplate(
        "Indicate if the following sentence is grammatically correct or not: \"{sentence}\". "
        "Answere 'acceptable' or 'unacceptable'.",
        ("unacceptable", "acceptable")),
    "mnli": PromptTemplate(
        "Does the premise: '{premise}' logically imply, contradict, or is neutral to the hypothesis: "
        "'{hypothesis}'? Answere with 'entailment', 'contradiction', or 'neutral'.",
        ("entailment", "neutral", "contradiction")),
    "mrpc": PromptTemplate(
        "Are the following sentences '{sentence1}' and '{sentence2}' conveying the same meaning? "
        "Answere with 'yes' or 'no'.",
        ("no", "yes")),
    "qnli": PromptTemplate(
        "Given the context: '{sentence}', does the question '{question}' have an answer based on the "
        "information provided? Answer with 'yes' or 'no'.",
        ("yes", "no")),
    "qqp": PromptTemplate(
        "Do the questions '{question1}' and '{question2}' have the same intent? Answere with 'yes' or 'no'.",
        ("no", "yes")),
    "rte": PromptTemplate(
        "Does the text: '{sentence1}' entail that '{sentence2}' is true? Provide 'yes' or 'no'.",
        ("yes", "no")),
    "sst2": PromptTemplate(
        "Given the sentence '{sentence}', determine the sentiment. Is it positive or negative?",
        ("negative", "positive")),
    "stsb": PromptTemplate(
        "Consider the sentences '{sentence1}' and '{sentence2}'. On a scale from 1 (completely different) "
        "to 5 (completely similar), rate the similarity.",
        ()),
}
"""Prompt of each GLUE task, by task name."""
