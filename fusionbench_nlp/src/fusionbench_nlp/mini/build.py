"""Building the mini-text suite: one zero-shot head per task on the pretrained MiniLM, one fine-tuned expert per task.

1. **Pretrained**: all-MiniLM-L6-v2 as packaged (copied into the suite directory without its
   integer ``position_ids`` buffer, so every model of the pool has the same tensors).
2. **Heads**: for each task a :class:`~fusionbench_core.suitekit.heads.CosineHead` made the way
   CLIP makes its zero-shot heads: the *pretrained* model embeds several descriptions of every
   class in several templates (:mod:`fusionbench_nlp.mini.descriptions`), and the class vector is
   their centred mean; logits are a fixed scale times the cosine, no bias. No training text is
   used, so the pretrained model is a true zero-shot baseline and the experts have the whole task
   to learn; the whole task vector lives in the backbone, and a merged backbone is scored in the
   feature space every head was made in.
3. **Experts**: the whole backbone fine-tuned on each task with that task's head frozen (dropout
   off, AdamW, warm-up then cosine decay, fixed seeded data order).

The training length and learning rate were chosen on the validation splits from the suite's own
properties (expert gain over the zero-shot model, the gap the simple average leaves), never from
how merge methods rank on test: see ``docs/results/mini.md``.

The steps, the store and resumption are the suite kit's
(:class:`fusionbench_core.suitekit.builder.SuiteBuilder`, as for mini-vision);
:class:`MiniTextBuilder` supplies the backbone and the tokenised texts::

    $FUSIONBENCH_CACHE/suites/mini-text/<variant>-<fingerprint>/
        pretrained/   heads/<task>.safetensors   seed<N>/<task>/
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.suitekit.builder import SuiteBuilder, settings_fingerprint
from fusionbench_core.suitekit.training import move_to
from torch import nn

from . import model as mm

SUITE = "mini-text"
CODE_VERSION = 2
"""2: zero-shot cosine heads from class descriptions (1: fitted linear probes)."""
EXPERT_TASKS = ("sentiment", "tweet_device", "fortune_topic", "language_id", "supersense", "austen_novel",
                "bible_section", "gloss_match")

QUICK_TASKS = ("tweet_device", "austen_novel", "gloss_match")
"""The quick variant fine-tunes three of the eight tasks (CPU budget of CI: about 2 minutes)."""


@dataclass(frozen=True)
class Profile:
    """Every setting that determines a built suite (its fingerprint names the cache directory)."""

    name: str
    tasks: tuple[str, ...] = EXPERT_TASKS
    max_len: int = 48
    head_scale: float = 16.0
    """The zero-shot heads' fixed logit scale (the value mini-vision chose on validation)."""
    head_shots: int = 0
    """0: heads come from class descriptions (:mod:`fusionbench_nlp.mini.descriptions`), not from examples."""
    train_examples: int = 1_536
    """Cap on fine-tuning texts per task."""
    epochs: int = 2
    lr: float = 1e-4
    batch: int = 16
    eval_examples: int | None = 200
    """Cap on validation texts used for the build summary (None: all)."""
    test_examples: int | None = 800
    """Cap on test (and validation) texts per task when a task pool scores: 8 x 800 texts score in about 30 s on 2 cores."""
    tiny_backbone: tuple[tuple[str, int], ...] | None = None
    """Tests only: a randomly initialised ``BertConfig`` of these sizes instead of MiniLM."""

    def fingerprint(self) -> str:
        """A short hash of the settings and the build code's version."""
        return settings_fingerprint(CODE_VERSION, self)


PROFILES: Mapping[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", tasks=QUICK_TASKS, max_len=32, train_examples=256, eval_examples=200, test_examples=400),
}
"""The two variants: ``full`` (``fb suites build mini-text``) and ``quick`` (``--quick``, for CI)."""


@dataclass(frozen=True)
class TextArrays:
    """One tokenised split: ``input_ids``/``token_type_ids`` padded to ``max_len``, true ``lengths``, labels."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> TextArrays:
        """The first ``limit`` examples (all when None)."""
        if limit is None or limit >= len(self):
            return self
        return TextArrays(self.input_ids[:limit], self.token_type_ids[:limit], self.lengths[:limit],
                          self.labels[:limit], self.classes)

    def take(self, indices: np.ndarray) -> TextArrays:
        """The examples at ``indices``, in that order."""
        return TextArrays(self.input_ids[indices], self.token_type_ids[indices], self.lengths[indices],
                          self.labels[indices], self.classes)

    def batch(self, idx: np.ndarray | slice) -> dict[str, torch.Tensor]:
        """Model inputs for some examples, padded to the longest of them."""
        width = int(self.lengths[idx].max())
        ids = torch.from_numpy(self.input_ids[idx, :width].astype(np.int64))
        types = torch.from_numpy(self.token_type_ids[idx, :width].astype(np.int64))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(self.lengths[idx].astype(np.int64))[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, labels: np.ndarray, classes: int,
             max_len: int) -> TextArrays:
    """Tokenise (truncating to ``max_len``) into fixed-width arrays."""
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_len, padding="max_length",
                    return_token_type_ids=True, return_attention_mask=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    return TextArrays(ids, np.asarray(enc["token_type_ids"], dtype=np.int8),
                      np.asarray(enc["attention_mask"], dtype=np.int32).sum(axis=1).astype(np.int32),
                      np.asarray(labels, dtype=np.int64), classes)


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    return mm.load_tokenizer(mm.minilm_dir())


def packaged_text_arrays(task: str, split: str, max_len: int) -> TextArrays:
    """A split of a task from the packaged sources (see :mod:`fusionbench_nlp.mini.data`), tokenised."""
    from . import data

    part = data.load_task(task, seed=0)[split]
    pairs = list(part["text_pair"]) if "text_pair" in part.column_names else None
    return tokenize(_tokenizer(), list(part["text"]), pairs,
                    np.asarray(part["label"]), part.features["label"].num_classes, max_len)


def packaged_descriptions(task: str, max_len: int) -> TextArrays:
    """The tokenised class descriptions of a task (every description in every template), labelled by class."""
    from . import data
    from .descriptions import description_texts

    names = data.load_task(task, seed=0)["train"].features["label"].names
    texts, labels = description_texts(task, list(names))
    return tokenize(_tokenizer(), texts, None, np.asarray(labels), len(names), max_len)


class MiniTextBuilder(SuiteBuilder):
    """The mini-text build: all-MiniLM-L6-v2 (a ``BertModel``), mean-pooled, on tokenised texts.

    ``data_source(task, split, max_len)`` returns :class:`TextArrays` (default: the packaged
    sources, tokenised with MiniLM's tokenizer); ``max_len`` is the profile's.
    ``description_source(task, max_len)`` returns the tokenised class descriptions a task's
    zero-shot head is made of (default: :func:`packaged_descriptions`).
    """

    suite = SUITE
    default_profiles = PROFILES
    eval_batch_size = 64

    def __init__(self, profiles: Mapping[str, Profile] | None = None,
                 data_source: Callable[..., TextArrays] | None = None,
                 description_source: Callable[[str, int], TextArrays] | None = None):
        super().__init__(profiles, data_source)
        self.description_source = description_source or packaged_descriptions

    def head_examples(self, profile: Profile, task: str) -> TextArrays:
        """The class descriptions (zero-shot: no training text), or with ``head_shots`` the first texts per class."""
        if profile.head_shots:
            return super().head_examples(profile, task)
        return self.description_source(task, profile.max_len)

    def training_examples(self, profile: Profile, task: str) -> TextArrays:
        """The first ``train_examples`` texts of the train split (less the head's shots when it has any)."""
        if profile.head_shots:
            return super().training_examples(profile, task)
        return self.task_arrays(profile, task, "train", profile.train_examples)

    def scoring_batches(self, examples: TextArrays, batch_size: int,
                        device: torch.device | str = "cpu") -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Batches of texts of similar length (a stable sort by length), so little compute goes into padding.

        Accuracy and mean loss do not depend on the order; on the 2-core CPU this scores the
        8 x 800 test texts in about half the time of the split's own order.
        """
        order = np.argsort(examples.lengths, kind="stable")
        yield from self.batches(examples.take(order), batch_size, device)

    def packaged_arrays(self, task: str, split: str, max_len: int) -> TextArrays:
        """A tokenised split of a task from the packaged sources."""
        return packaged_text_arrays(task, split, max_len)

    def source_arguments(self, profile: Profile, task: str, split: str) -> tuple[Any, ...]:
        """``(task, split, profile.max_len)``: the variants tokenise to different lengths."""
        return (task, split, profile.max_len)

    def setup(self) -> None:
        """Silence transformers."""
        mm.quiet_transformers()

    def load_backbone(self, directory: Path) -> nn.Module:
        """The backbone of a model directory, as a ``BertModel`` in eval mode."""
        return mm.load_backbone(directory)

    def features(self, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the backbone's last hidden states over the non-padding tokens."""
        return mm.features(model, inputs)

    def batches(self, examples: TextArrays, batch_size: int,
                device: torch.device | str = "cpu") -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """``(inputs, labels)`` on ``device``; ``inputs`` is a dict of tensors padded per batch."""
        for i in range(0, len(examples), batch_size):
            yield (move_to(examples.batch(slice(i, i + batch_size)), device),
                   torch.from_numpy(examples.labels[i : i + batch_size]).to(device))

    def step_loss(self, backbone: nn.Module, head: nn.Module,
                  examples: TextArrays) -> Callable[[torch.Tensor], torch.Tensor]:
        """Cross-entropy of ``head(backbone(x))`` on the texts at some indices (sorted, padded per batch)."""
        dev = next(backbone.parameters()).device
        labels = torch.from_numpy(examples.labels).to(dev)

        def loss(order: torch.Tensor) -> torch.Tensor:
            idx = np.sort(order.numpy())
            logits = head(mm.features(backbone, move_to(examples.batch(idx), dev)))
            return nn.functional.cross_entropy(logits, labels[torch.from_numpy(idx).to(dev)])

        return loss

    def write_pretrained(self, profile: Profile, directory: Path, device: torch.device) -> str:
        """Copy all-MiniLM-L6-v2 (with its tokenizer), or a random tiny ``BertModel`` for a test profile."""
        if profile.tiny_backbone is not None:
            from transformers import BertConfig

            config = BertConfig(**dict(profile.tiny_backbone), hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
            mm.write_model_dir(directory, config, mm.checkpoint_state(mm.new_backbone(config)))
            return "random tiny BertModel (tests)"
        source = mm.minilm_dir()
        backbone = mm.load_backbone(source)
        mm.write_model_dir(directory, backbone.config, mm.checkpoint_state(backbone), tokenizer_from=source,
                           extra={"source": str(source)})
        return f"all-MiniLM-L6-v2 from {source}"

    def save_expert(self, profile: Profile, directory: Path, backbone: nn.Module, head: nn.Module,
                    info: Mapping[str, Any]) -> None:
        """Write the expert backbone, its head and ``info.json`` (the tokenizer stays with the pretrained copy)."""
        mm.write_model_dir(directory, backbone.config, mm.checkpoint_state(backbone), head=mm.head_state(head),
                           extra=info)


BUILDER = MiniTextBuilder()
"""The suite's own build: the packaged data and :data:`PROFILES` (what ``fb`` uses)."""
