"""Building the mini-text suite: one head per task on the pretrained MiniLM, one fully fine-tuned expert per task.

1. **Pretrained**: all-MiniLM-L6-v2 as packaged (copied into the suite directory without its
   integer ``position_ids`` buffer, so every model of the pool has the same tensors).
2. **Heads**: for each task a linear head fitted (L-BFGS, deterministic) on the *pretrained*
   model's mean-pooled features of the task's training texts. Why fitted-and-frozen rather than
   trained jointly: the pretrained model then has a meaningful score on every task (a linear
   probe), the whole task vector lives in the backbone, and a merged backbone still speaks the
   feature space every head was fitted in; GPT-2 GLUE's jointly trained heads only work with a
   merged backbone because its experts stay close to the pretrained model, which a frozen head
   encourages too.
3. **Experts**: the whole backbone fine-tuned on each task with that task's head frozen (dropout
   off, AdamW, warm-up then cosine decay, fixed seeded data order).

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
CODE_VERSION = 1
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
    train_examples: int = 768
    """Cap on training texts per task, for the head fit and the fine-tuning alike."""
    epochs: int = 2
    lr: float = 5e-5
    batch: int = 16
    eval_examples: int | None = 200
    """Cap on validation texts used for the build summary (None: all)."""
    tiny_backbone: tuple[tuple[str, int], ...] | None = None
    """Tests only: a randomly initialised ``BertConfig`` of these sizes instead of MiniLM."""

    def fingerprint(self) -> str:
        """A short hash of the settings and the build code's version."""
        return settings_fingerprint(CODE_VERSION, self)


PROFILES: Mapping[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", tasks=QUICK_TASKS, max_len=32, train_examples=256, eval_examples=200),
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


class MiniTextBuilder(SuiteBuilder):
    """The mini-text build: all-MiniLM-L6-v2 (a ``BertModel``), mean-pooled, on tokenised texts.

    ``data_source(task, split, max_len)`` returns :class:`TextArrays` (default: the packaged
    sources, tokenised with MiniLM's tokenizer); ``max_len`` is the profile's.
    """

    suite = SUITE
    default_profiles = PROFILES
    eval_batch_size = 128

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
