"""Tokenised evaluation sets, cached on disk under ``fusionbench_core.hub.cache_dir("nlp", "tokenized")``.

A cache entry is a ``datasets`` ``save_to_disk`` directory holding the unpadded ``input_ids`` of every
row with its ``label`` (and, for text-to-text, its ``target`` text). Its name carries a digest of
what it was made from: the encoding kind and its format version, the task and split, the data
source (local file paths, sizes and mtimes, or the hub id) and the tokenizer (its full serialised
vocabulary and special tokens). A hit skips reading and tokenising the raw data; anything that
changes gives a new entry. Entries are written to a temporary name and renamed when complete.
Padding happens per batch at evaluation time, so one entry serves every batch size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusionbench_core.hub import cache_dir

from .glue import GLUE_TASKS, load_split, source_of
from .prompts import GLUE_PROMPTS

FORMAT_VERSION = 1
"""Bump when an encoding below changes, so old cache entries are not reused."""

_BATCH = 1000


@dataclass
class EncodedSplit:
    """One task's evaluation rows, tokenised: ``input_ids`` per row, labels, and target texts."""

    input_ids: list[list[int]]
    labels: list[Any]
    targets: list[str] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int | None) -> EncodedSplit:
        """The first ``n`` rows (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return EncodedSplit(self.input_ids[:n], self.labels[:n], None if self.targets is None else self.targets[:n])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of everything about ``tokenizer`` that changes its ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, tokenizer.model_max_length, tokenizer.all_special_tokens])
    return hashlib.sha256((body + extra).encode()).hexdigest()


def _rows(dataset: Any, start: int, stop: int) -> list[dict[str, Any]]:
    chunk = dataset[start:stop]
    return [dict(zip(chunk, values)) for values in zip(*chunk.values())]


def encode_pairs(tokenizer: Any, task: str, dataset: Any, max_length: int) -> dict[str, list]:
    """GPT-2 classification: the task's text columns as one text or a (first, second) pair, truncated."""
    columns = GLUE_TASKS[task].text_columns
    ids: list[list[int]] = []
    labels: list[Any] = []
    for start in range(0, len(dataset), _BATCH):
        chunk = dataset[start:start + _BATCH]
        texts = [chunk[c] for c in columns]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        ids.extend(encoded["input_ids"])
        labels.extend(chunk["label"])
    return {"input_ids": ids, "label": labels}


def encode_prompts(tokenizer: Any, task: str, dataset: Any, max_length: int) -> dict[str, list]:
    """Flan-T5 text-to-text: the prompt as input ids; the target word as the tokenizer gives it back."""
    template = GLUE_PROMPTS[task]
    ids: list[list[int]] = []
    labels: list[Any] = []
    targets: list[str] = []
    for start in range(0, len(dataset), _BATCH):
        rows = _rows(dataset, start, start + _BATCH)
        pairs = [template.render(row) for row in rows]
        encoded = tokenizer([p[0] for p in pairs], truncation=True, max_length=max_length)
        ids.extend(encoded["input_ids"])
        labels.extend(row["label"] for row in rows)
        # Upstream compares against the decoded target ids, so round-trip the target the same way.
        target_ids = tokenizer([p[1] for p in pairs])["input_ids"]
        targets.extend(tokenizer.batch_decode(target_ids, skip_special_tokens=True))
    return {"input_ids": ids, "label": labels, "target": targets}


ENCODERS: dict[str, Callable[[Any, str, Any, int], dict[str, list]]] = {
    "pairs": encode_pairs,
    "prompts": encode_prompts,
}


def load_encoded(kind: str, task: str, split: str, tokenizer: Any, max_length: int) -> EncodedSplit:
    """``task``'s ``split`` encoded by ``ENCODERS[kind]``, from the cache when it holds it."""
    import datasets

    from .runtime import quiet_transformers

    quiet_transformers()
    key = json.dumps({"v": FORMAT_VERSION, "kind": kind, "task": task, "split": split, "max_length": max_length,
                      "source": source_of(task, split), "tokenizer": tokenizer_fingerprint(tokenizer)},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    root = cache_dir("nlp", "tokenized")
    path = root / f"{kind}-{task}-{split}-{digest}"
    if not (path / "dataset_info.json").exists():
        columns = ENCODERS[kind](tokenizer, task, load_split(task, split), max_length)
        tmp = root / f".{path.name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        datasets.Dataset.from_dict(columns).save_to_disk(str(tmp))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    table = datasets.load_from_disk(str(path)).to_dict()
    return EncodedSplit(table["input_ids"], table["label"], table.get("target"))
