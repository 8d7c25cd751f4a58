"""Building the mini-vision suite: pretrain once, fit one head per task, fine-tune one expert per task.

1. **Pretrained**: a ``CLIPVisionModel``-architecture encoder trained from scratch on Fashion-MNIST
   (the pretraining set; always seed 0, so every expert seed shares it).
2. **Heads**: for every task a linear head fitted (L-BFGS, deterministic) on the *pretrained*
   encoder's pooled features of the task's training images; the pretrained model's score on a
   task is this linear probe.
3. **Experts**: the encoder fine-tuned on each task with that task's head frozen, so the whole
   task vector lives in the encoder and any merged encoder is scored with each task's own head,
   the role CLIP's zero-shot text heads play in the CLIP suites.

Everything is seeded and runs in a fixed data order, so a build on one machine (and thread count)
gives the same bytes every time. Each stage is written to a temporary directory and renamed into
place when complete; a build resumes from whatever is already there, one expert at a time.
Layout under ``$FUSIONBENCH_CACHE/suites/mini-vision/<variant>-<fingerprint>/``::

    pretrained/{config.json, model.safetensors, info.json}
    heads/<task>.safetensors
    seed<N>/<task>/{config.json, model.safetensors, head.safetensors, info.json}

The fingerprint hashes the variant's settings, so changing a setting never reuses stale models.
"""

from __future__ import annotations

import copy
import dataclasses
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

SUITE = "mini-vision"
CODE_VERSION = 1
PRETRAIN_TASK = "fashion_mnist"
EXPERT_TASKS = ("mnist", "digits", "twemoji", "noto_emoji", "emoji_subcategory", "font_letters")


@dataclass(frozen=True)
class Profile:
    """Every setting that determines a built suite (its fingerprint names the cache directory)."""

    name: str
    tasks: tuple[str, ...] = EXPERT_TASKS
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp: int = 512
    patch: int = 8
    pretrain_examples: int = 55_000
    pretrain_epochs: int = 1
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 128
    train_examples: int = 2_000
    """Cap on training images per task, for the head fit and the fine-tuning alike."""
    epochs: int = 5
    lr: float = 3e-4
    batch: int = 64
    eval_examples: int | None = 500
    """Cap on validation images used for the build summary (None: all)."""

    def fingerprint(self) -> str:
        """A short hash of the settings and the build code's version."""
        blob = json.dumps({"code": CODE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def encoder_config(self) -> Any:
        """The encoder's ``CLIPVisionConfig``."""
        return mm.encoder_config(width=self.width, layers=self.layers, heads=self.heads, mlp=self.mlp, patch=self.patch)


PROFILES: dict[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", pretrain_examples=12_000, train_examples=1_000, eval_examples=300),
}
"""The two variants: ``full`` (``fb suites build mini-vision``) and ``quick`` (``--quick``, for CI)."""


def profile_for(quick: bool) -> Profile:
    """The ``quick`` or ``full`` profile."""
    return PROFILES["quick" if quick else "full"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TaskArrays:
    """One split of one task as arrays: ``uint8[N, 32, 32, 3]`` images, ``int64[N]`` labels."""

    images: np.ndarray
    labels: np.ndarray
    classes: int


def packaged_task_arrays(task: str, split: str) -> TaskArrays:
    """A split of a task from the packaged sources (see :mod:`fusionbench_vision.mini.data`)."""
    from . import data

    dsd = data.load_task(task, seed=0)
    images, labels = data.as_arrays(dsd[split])
    return TaskArrays(images, labels, dsd[split].features["label"].num_classes)


DATA_SOURCE: Callable[[str, str], TaskArrays] = packaged_task_arrays
"""Where task arrays come from; tests and the results script point it at other arrays."""

_ARRAYS: dict[tuple[int, str, str], TaskArrays] = {}


def task_arrays(task: str, split: str, limit: int | None = None) -> TaskArrays:
    """A split of a task (memoised per data source), optionally its first ``limit`` examples.

    Splits are stratified prefixes (see ``data._stratified_order``), so a prefix keeps the classes balanced.
    """
    key = (id(DATA_SOURCE), task, split)
    if key not in _ARRAYS:
        _ARRAYS[key] = DATA_SOURCE(task, split)
    arrays = _ARRAYS[key]
    if limit is not None and limit < len(arrays.labels):
        arrays = TaskArrays(arrays.images[:limit], arrays.labels[:limit], arrays.classes)
    return arrays


# --------------------------------------------------------------------------- training


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _schedule(total: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10 % of the steps, then cosine decay to zero."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


def train(encoder: nn.Module, head: nn.Module, arrays: TaskArrays, *, params: list[nn.Parameter], epochs: int,
          lr: float, batch: int, seed: int, description: str) -> float:
    """Minimise cross-entropy of ``head(encoder(x))`` over ``params``; returns the last epoch's mean loss.

    The data order comes from a generator seeded by ``seed`` alone, so the result does not depend
    on anything trained before it (that is what makes resuming reproduce a full build).
    """
    from fusionbench_core.progress import track

    dev = next(encoder.parameters()).device
    images = torch.from_numpy(np.ascontiguousarray(arrays.images)).to(dev)
    labels = torch.from_numpy(arrays.labels).to(dev)
    n = len(labels)
    per_epoch = math.ceil(n / batch)
    total = per_epoch * epochs
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(total))
    encoder.train()
    epoch_loss, order = 0.0, None
    for step in track(range(total), description):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(n, generator=gen).to(dev)
            epoch_loss = 0.0
        idx = order[position * batch : (position + 1) * batch]
        loss = nn.functional.cross_entropy(head(mm.features(encoder, mm.pixel_values(images[idx]))), labels[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        epoch_loss += float(loss.detach()) / per_epoch
    encoder.eval()
    return epoch_loss


@torch.inference_mode()
def encode_all(encoder: nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Pooled features of many images, batched, on the encoder's device."""
    dev = next(encoder.parameters()).device
    encoder.eval()
    parts = [mm.features(encoder, mm.pixel_values(torch.from_numpy(images[i : i + batch]).to(dev)))
             for i in range(0, len(images), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, encoder.config.hidden_size, device=dev)


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


def evaluate(encoder: nn.Module, head: nn.Module, arrays: TaskArrays, batch: int = 256) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(encoder(x))`` over a split, batched.

    Scores through :func:`fusionbench_core.protocols.task_logits`, so an ensemble that combines its
    members after the head (a predictor) is scored by its own rule.
    """
    from fusionbench_core.protocols import task_logits

    dev = next(encoder.parameters()).device
    # A copy: moving the caller's head inside inference mode would turn its weights into inference
    # tensors, which a later training step (AdaMerging through the pool's logits) cannot use.
    head = copy.deepcopy(head).to(dev)
    encoder.eval()
    correct, loss_sum, n = 0, 0.0, len(arrays.labels)
    with torch.inference_mode():
        for i in range(0, n, batch):
            x = mm.pixel_values(torch.from_numpy(arrays.images[i : i + batch]).to(dev))
            y = torch.from_numpy(arrays.labels[i : i + batch]).to(dev)
            logits = task_logits(encoder, lambda member, inputs: head(mm.features(member, inputs)), x).float()
            correct += int((logits.argmax(dim=1) == y).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return {"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)}


# --------------------------------------------------------------------------- the suite on disk


def suite_dir(profile: Profile) -> Path:
    """The cache directory of a built variant (not created)."""
    from fusionbench_core.hub import cache_dir

    return cache_dir("suites", SUITE) / f"{profile.name}-{profile.fingerprint()}"


def pretrained_dir(profile: Profile) -> Path:
    """Directory of the pretrained encoder."""
    return suite_dir(profile) / "pretrained"


def head_path(profile: Profile, task: str) -> Path:
    """File of a task's head (fitted on pretrained features)."""
    return suite_dir(profile) / "heads" / f"{task}.safetensors"


def expert_dir(profile: Profile, seed: int, task: str) -> Path:
    """Directory of one expert."""
    return suite_dir(profile) / f"seed{seed}" / task


def is_built(profile: Profile, seed: int) -> bool:
    """Whether the pretrained encoder, every head and every expert of ``seed`` are on disk."""
    return ((pretrained_dir(profile) / mm.MODEL_FILE).exists()
            and all(head_path(profile, t).exists() for t in profile.tasks)
            and all((expert_dir(profile, seed, t) / mm.HEAD_FILE).exists() for t in profile.tasks))


def _task_seed(seed: int, task: str) -> int:
    """A per-(seed, task) seed, so experts do not depend on each other or on build order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}".encode()).digest()[:4], "little")


def _save_head(path: Path, head: nn.Linear) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(mm.head_state(head), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _build_pretrained(profile: Profile, dev: torch.device) -> dict[str, Any]:
    config = profile.encoder_config()
    encoder = mm.new_encoder(config, seed=0).to(dev)
    train_set = task_arrays(PRETRAIN_TASK, "train", profile.pretrain_examples)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = nn.Linear(profile.width, train_set.classes)
    head = head.to(dev)
    start = time.perf_counter()
    loss = train(encoder, head, train_set, params=[*encoder.parameters(), *head.parameters()],
                 epochs=profile.pretrain_epochs, lr=profile.pretrain_lr, batch=profile.pretrain_batch, seed=0,
                 description=f"{SUITE}: pretraining on {PRETRAIN_TASK}")
    info = {"task": PRETRAIN_TASK, "train_examples": len(train_set.labels), "train_loss": loss,
            "seconds": round(time.perf_counter() - start, 1), "device": str(dev)}
    val = task_arrays(PRETRAIN_TASK, "validation", profile.eval_examples)
    info["validation_accuracy"] = evaluate(encoder, head, val)["accuracy"]
    mm.write_model_dir(pretrained_dir(profile), config, mm.checkpoint_state(encoder), extra=info)
    return info


def _build_expert(profile: Profile, seed: int, task: str, pretrained: nn.Module, head: nn.Linear,
                  dev: torch.device, label: str) -> dict[str, Any]:
    encoder = copy.deepcopy(pretrained).to(dev)
    head = copy.deepcopy(head).to(dev)
    head.requires_grad_(False)
    train_set = task_arrays(task, "train", profile.train_examples)
    start = time.perf_counter()
    loss = train(encoder, head, train_set, params=list(encoder.parameters()), epochs=profile.epochs, lr=profile.lr,
                 batch=profile.batch, seed=_task_seed(seed, task), description=f"{SUITE}: {label}")
    val = task_arrays(task, "validation", profile.eval_examples)
    info = {"task": task, "seed": seed, "train_examples": len(train_set.labels), "train_loss": loss,
            "seconds": round(time.perf_counter() - start, 1), "device": str(dev),
            "validation_accuracy": evaluate(encoder, head, val)["accuracy"],
            "pretrained_validation_accuracy": evaluate(pretrained, head, val)["accuracy"]}
    mm.write_model_dir(expert_dir(profile, seed, task), profile.encoder_config(), mm.checkpoint_state(encoder),
                       head=mm.head_state(head), extra=info)
    return info


def build(profile: Profile, seed: int = 0, *, force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Build (or finish building) one variant for one expert seed; returns a summary.

    ``force`` rebuilds the pretrained encoder, the heads and this seed's experts. ``stop_after``
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
    if not (pretrained_dir(profile) / mm.MODEL_FILE).exists():
        info = _build_pretrained(profile, dev)
        summary["pretrained"] = f"built in {info['seconds']} s ({PRETRAIN_TASK} val acc {info['validation_accuracy']:.3f})"
    else:
        summary["pretrained"] = "cached"
    pretrained = mm.load_encoder(pretrained_dir(profile)).to(dev)
    missing_heads = [t for t in profile.tasks if not head_path(profile, t).exists()]
    for task in track(missing_heads, f"{SUITE}: fitting heads on pretrained features"):
        train_set = task_arrays(task, "train", profile.train_examples)
        _save_head(head_path(profile, task), fit_head(encode_all(pretrained, train_set.images), train_set.labels,
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
            head = mm.load_head(head_path(profile, task))
            info = _build_expert(profile, seed, task, pretrained, head, dev, f"{task} ({i + 1}/{len(profile.tasks)})")
            built += 1
        results[task] = f"val acc {info['pretrained_validation_accuracy']:.3f} -> {info['validation_accuracy']:.3f}"
    summary["experts"] = f"{built} trained, {len(results) - built} cached"
    summary.update({f"expert {task}": text for task, text in results.items()})
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary
