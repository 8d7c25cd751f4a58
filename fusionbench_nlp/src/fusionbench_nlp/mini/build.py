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
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
        blob = json.dumps({"code": CODE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


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


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(inputs: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev) for k, v in inputs.items()}


def _schedule(total: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10 % of the steps, then cosine decay to zero."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


def train(backbone: nn.Module, head: nn.Module, arrays: TextArrays, *, epochs: int, lr: float, batch: int,
          seed: int, description: str) -> float:
    """Fine-tune every backbone parameter under a frozen head; returns the last epoch's mean loss."""
    from fusionbench_core.progress import track

    dev = next(backbone.parameters()).device
    labels = torch.from_numpy(arrays.labels).to(dev)
    n = len(arrays)
    per_epoch = math.ceil(n / batch)
    total = per_epoch * epochs
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(backbone.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(total))
    backbone.train()
    epoch_loss, order = 0.0, None
    for step in track(range(total), description):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(n, generator=gen).numpy()
            epoch_loss = 0.0
        idx = np.sort(order[position * batch : (position + 1) * batch])
        logits = head(mm.features(backbone, _to(arrays.batch(idx), dev)))
        loss = nn.functional.cross_entropy(logits, labels[torch.from_numpy(idx).to(dev)])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        epoch_loss += float(loss.detach()) / per_epoch
    backbone.eval()
    return epoch_loss


@torch.inference_mode()
def encode_all(backbone: nn.Module, arrays: TextArrays, batch: int = 128) -> torch.Tensor:
    """Mean-pooled features of a split, batched."""
    dev = next(backbone.parameters()).device
    backbone.eval()
    return torch.cat([mm.features(backbone, _to(arrays.batch(slice(i, i + batch)), dev))
                      for i in range(0, len(arrays), batch)])


def fit_head(feats: torch.Tensor, labels: np.ndarray, classes: int, *, l2: float = 1e-3, iterations: int = 200) -> nn.Linear:
    """Multinomial logistic regression on fixed features (L-BFGS in float64 on the CPU, zero start)."""
    x = feats.detach().to("cpu", torch.float64)
    y = torch.from_numpy(labels)
    head = mm.new_head(x.shape[1], classes).double()
    optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    head = head.float()
    head.requires_grad_(False)
    return head.eval()


def evaluate(backbone: nn.Module, head: nn.Module, arrays: TextArrays, batch: int = 128) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(backbone(x))`` over a split, batched.

    Scores through :func:`fusionbench_core.protocols.task_logits`, so an ensemble that combines its
    members after the head (a predictor) is scored by its own rule.
    """
    from fusionbench_core.protocols import task_logits

    dev = next(backbone.parameters()).device
    # A copy: moving the caller's head inside inference mode would turn its weights into inference
    # tensors, which a later training step (AdaMerging through the pool's logits) cannot use.
    head = copy.deepcopy(head).to(dev)
    backbone.eval()
    correct, loss_sum, n = 0, 0.0, len(arrays)
    with torch.inference_mode():
        for i in range(0, n, batch):
            y = torch.from_numpy(arrays.labels[i : i + batch]).to(dev)
            inputs = _to(arrays.batch(slice(i, i + batch)), dev)
            logits = task_logits(backbone, lambda member, x: head(mm.features(member, x)), inputs).float()
            correct += int((logits.argmax(dim=1) == y).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return {"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)}


# --------------------------------------------------------------------------- the suite on disk


def suite_dir(profile: Profile) -> Path:
    """The cache directory of a built variant."""
    from fusionbench_core.hub import cache_dir

    return cache_dir("suites", SUITE) / f"{profile.name}-{profile.fingerprint()}"


def pretrained_dir(profile: Profile) -> Path:
    """Directory of the pretrained backbone (with the tokenizer files)."""
    return suite_dir(profile) / "pretrained"


def head_path(profile: Profile, task: str) -> Path:
    """File of a task's head (fitted on pretrained features)."""
    return suite_dir(profile) / "heads" / f"{task}.safetensors"


def expert_dir(profile: Profile, seed: int, task: str) -> Path:
    """Directory of one expert."""
    return suite_dir(profile) / f"seed{seed}" / task


def is_built(profile: Profile, seed: int) -> bool:
    """Whether the pretrained backbone, every head and every expert of ``seed`` are on disk."""
    return ((pretrained_dir(profile) / mm.MODEL_FILE).exists()
            and all(head_path(profile, t).exists() for t in profile.tasks)
            and all((expert_dir(profile, seed, t) / mm.HEAD_FILE).exists() for t in profile.tasks))


def _task_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}".encode()).digest()[:4], "little")


def _save_head(path: Path, head: nn.Linear) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(mm.head_state(head), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


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


def build(profile: Profile, seed: int = 0, *, force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Build (or finish building) one variant for one expert seed; returns a summary.

    ``force`` rebuilds the pretrained copy, the heads and this seed's experts; ``stop_after``
    stops after that many newly trained experts (how tests simulate an interrupted build).
    """
    from fusionbench_core.progress import track

    mm.quiet_transformers()
    dev = device()
    root = suite_dir(profile)
    if force:
        for path in (root / "pretrained", root / "heads", root / f"seed{seed}"):
            shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {"suite": SUITE, "variant": profile.name, "seed": seed, "directory": str(root),
                               "device": str(dev)}
    summary["pretrained"] = (_write_pretrained(profile) if not (pretrained_dir(profile) / mm.MODEL_FILE).exists()
                             else "cached")
    pretrained = mm.load_backbone(pretrained_dir(profile)).to(dev)
    missing_heads = [t for t in profile.tasks if not head_path(profile, t).exists()]
    for task in track(missing_heads, f"{SUITE}: fitting heads on pretrained features"):
        train_set = task_arrays(task, "train", profile.max_len, profile.train_examples)
        _save_head(head_path(profile, task), fit_head(encode_all(pretrained, train_set), train_set.labels,
                                                       train_set.classes))
    built, results = 0, {}
    for i, task in enumerate(profile.tasks):
        target = expert_dir(profile, seed, task)
        if (target / mm.HEAD_FILE).exists():
            info = json.loads((target / "info.json").read_text())
        else:
            if stop_after is not None and built >= stop_after:
                summary["stopped"] = f"after {built} experts"
                break
            head = mm.load_head(head_path(profile, task)).to(dev)
            backbone = copy.deepcopy(pretrained)
            train_set = task_arrays(task, "train", profile.max_len, profile.train_examples)
            began = time.perf_counter()
            loss = train(backbone, head, train_set, epochs=profile.epochs, lr=profile.lr, batch=profile.batch,
                         seed=_task_seed(seed, task), description=f"{SUITE}: {task} ({i + 1}/{len(profile.tasks)})")
            val = task_arrays(task, "validation", profile.max_len, profile.eval_examples)
            info = {"task": task, "seed": seed, "train_examples": len(train_set), "train_loss": loss,
                    "seconds": round(time.perf_counter() - began, 1), "device": str(dev),
                    "validation_accuracy": evaluate(backbone, head, val)["accuracy"],
                    "pretrained_validation_accuracy": evaluate(pretrained, head, val)["accuracy"]}
            mm.write_model_dir(target, backbone.config, mm.checkpoint_state(backbone), head=mm.head_state(head),
                               extra=info)
            del backbone
            built += 1
        results[task] = f"val acc {info['pretrained_validation_accuracy']:.3f} -> {info['validation_accuracy']:.3f}"
    summary["experts"] = f"{built} trained, {len(results) - built} cached"
    summary.update({f"expert {task}": text for task, text in results.items()})
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary
