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

Same layout, fingerprinting, atomic writes and resumption as the mini-vision build::

    $FUSIONBENCH_CACHE/suites/mini-text/<variant>-<fingerprint>/
        pretrained/   heads/<task>.safetensors   seed<N>/<task>/
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.engine.expert_suite import (  # noqa: F401  (part of this module's API)
    SuiteStore,
    build_expert_suite,
    device,
    evaluate_head,
    fit_head,
    move_to,
    settings_fingerprint,
    train_under_head,
)
from fusionbench_core.engine.expert_suite import task_seed as _task_seed
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


PROFILES: dict[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", tasks=QUICK_TASKS, max_len=32, train_examples=256, eval_examples=200),
}
"""The two variants: ``full`` (``fb suites build mini-text``) and ``quick`` (``--quick``, for CI)."""


def profile_for(quick: bool) -> Profile:
    """The ``quick`` or ``full`` profile."""
    return PROFILES["quick" if quick else "full"]


# --------------------------------------------------------------------------- data


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


DATA_SOURCE: Callable[[str, str, int], TextArrays] = packaged_text_arrays
"""Where tokenised splits come from; tests and the results script point it at other arrays."""

_ARRAYS: dict[tuple[int, str, str, int], TextArrays] = {}


def task_arrays(task: str, split: str, max_len: int, limit: int | None = None) -> TextArrays:
    """A tokenised split (memoised per data source), optionally its first ``limit`` examples."""
    key = (id(DATA_SOURCE), task, split, max_len)
    if key not in _ARRAYS:
        _ARRAYS[key] = DATA_SOURCE(task, split, max_len)
    return _ARRAYS[key].head(limit)


# --------------------------------------------------------------------------- training


def train(backbone: nn.Module, head: nn.Module, arrays: TextArrays, *, epochs: int, lr: float, batch: int,
          seed: int, description: str) -> float:
    """Fine-tune every backbone parameter under a frozen head; returns the last epoch's mean loss."""
    dev = next(backbone.parameters()).device
    labels = torch.from_numpy(arrays.labels).to(dev)

    def step_loss(order: torch.Tensor) -> torch.Tensor:
        idx = np.sort(order.numpy())
        logits = head(mm.features(backbone, move_to(arrays.batch(idx), dev)))
        return nn.functional.cross_entropy(logits, labels[torch.from_numpy(idx).to(dev)])

    return train_under_head(backbone, backbone.parameters(), len(arrays), step_loss, epochs=epochs, lr=lr,
                            batch=batch, seed=seed, description=description)


@torch.inference_mode()
def encode_all(backbone: nn.Module, arrays: TextArrays, batch: int = 128) -> torch.Tensor:
    """Mean-pooled features of a split, batched."""
    dev = next(backbone.parameters()).device
    backbone.eval()
    return torch.cat([mm.features(backbone, move_to(arrays.batch(slice(i, i + batch)), dev))
                      for i in range(0, len(arrays), batch)])


def evaluate(backbone: nn.Module, head: nn.Module, arrays: TextArrays, batch: int = 128) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(backbone(x))`` over a split, batched.

    Scores through :func:`fusionbench_core.protocols.task_logits` (see
    :func:`fusionbench_core.engine.expert_suite.evaluate_head`).
    """
    dev = next(backbone.parameters()).device
    batches = ((move_to(arrays.batch(slice(i, i + batch)), dev), torch.from_numpy(arrays.labels[i : i + batch]).to(dev))
               for i in range(0, len(arrays), batch))
    return evaluate_head(backbone, head, batches, mm.features)


# --------------------------------------------------------------------------- the suite on disk


def suite_dir(profile: Profile) -> Path:
    """The cache directory of a built variant."""
    from fusionbench_core.hub import cache_dir

    return cache_dir("suites", SUITE) / f"{profile.name}-{profile.fingerprint()}"


def store(profile: Profile) -> SuiteStore:
    """The store (layout and build state) of a variant."""
    return SuiteStore(suite_dir(profile))


def pretrained_dir(profile: Profile) -> Path:
    """Directory of the pretrained backbone (with the tokenizer files)."""
    return store(profile).pretrained_dir


def head_path(profile: Profile, task: str) -> Path:
    """File of a task's head (fitted on pretrained features)."""
    return store(profile).head_path(task)


def expert_dir(profile: Profile, seed: int, task: str) -> Path:
    """Directory of one expert."""
    return store(profile).expert_dir(seed, task)


def is_built(profile: Profile, seed: int) -> bool:
    """Whether the pretrained backbone, every head and every expert of ``seed`` are on disk."""
    return store(profile).is_built(seed, profile.tasks)


def _write_pretrained(profile: Profile) -> str:
    if profile.tiny_backbone is not None:
        from transformers import BertConfig

        config = BertConfig(**dict(profile.tiny_backbone), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        mm.write_model_dir(pretrained_dir(profile), config, mm.checkpoint_state(mm.new_backbone(config)))
        return "random tiny BertModel (tests)"
    source = mm.minilm_dir()
    backbone = mm.load_backbone(source)
    mm.write_model_dir(pretrained_dir(profile), backbone.config, mm.checkpoint_state(backbone), tokenizer_from=source,
                       extra={"source": str(source)})
    return f"all-MiniLM-L6-v2 from {source}"


def _fit_task_head(profile: Profile, pretrained: nn.Module, task: str) -> nn.Linear:
    train_set = task_arrays(task, "train", profile.max_len, profile.train_examples)
    return fit_head(encode_all(pretrained, train_set), train_set.labels, train_set.classes)


def _train_expert(profile: Profile, seed: int, task: str, pretrained: nn.Module, head: nn.Linear,
                  dev: torch.device, label: str) -> dict[str, Any]:
    head = head.to(dev)
    backbone = copy.deepcopy(pretrained)
    train_set = task_arrays(task, "train", profile.max_len, profile.train_examples)
    began = time.perf_counter()
    loss = train(backbone, head, train_set, epochs=profile.epochs, lr=profile.lr, batch=profile.batch,
                 seed=_task_seed(seed, task), description=f"{SUITE}: {label}")
    val = task_arrays(task, "validation", profile.max_len, profile.eval_examples)
    info = {"task": task, "seed": seed, "train_examples": len(train_set), "train_loss": loss,
            "seconds": round(time.perf_counter() - began, 1), "device": str(dev),
            "validation_accuracy": evaluate(backbone, head, val)["accuracy"],
            "pretrained_validation_accuracy": evaluate(pretrained, head, val)["accuracy"]}
    mm.write_model_dir(expert_dir(profile, seed, task), backbone.config, mm.checkpoint_state(backbone),
                       head=mm.head_state(head), extra=info)
    return info


def build(profile: Profile, seed: int = 0, *, force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Build (or finish building) one variant for one expert seed; returns a summary.

    ``force`` rebuilds the pretrained copy, the heads and this seed's experts; ``stop_after``
    stops after that many newly trained experts (how tests simulate an interrupted build).
    """
    mm.quiet_transformers()
    dev = device()
    return build_expert_suite(
        store(profile), suite=SUITE, variant=profile.name, tasks=profile.tasks, seed=seed, dev=dev,
        write_pretrained=lambda: _write_pretrained(profile),
        load_pretrained=lambda: mm.load_backbone(pretrained_dir(profile)).to(dev),
        fit_task_head=lambda pretrained, task: _fit_task_head(profile, pretrained, task),
        train_expert=lambda pretrained, head, task, label: _train_expert(profile, seed, task, pretrained, head, dev,
                                                                         label),
        force=force, stop_after=stop_after,
    )
