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
    settings_fingerprint,
    train_under_head,
)
from fusionbench_core.engine.expert_suite import task_seed as _task_seed
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
        return settings_fingerprint(CODE_VERSION, self)

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


def train(encoder: nn.Module, head: nn.Module, arrays: TaskArrays, *, params: list[nn.Parameter], epochs: int,
          lr: float, batch: int, seed: int, description: str) -> float:
    """Minimise cross-entropy of ``head(encoder(x))`` over ``params``; returns the last epoch's mean loss.

    The data order comes from a generator seeded by ``seed`` alone, so the result does not depend
    on anything trained before it (that is what makes resuming reproduce a full build).
    """
    dev = next(encoder.parameters()).device
    images = torch.from_numpy(np.ascontiguousarray(arrays.images)).to(dev)
    labels = torch.from_numpy(arrays.labels).to(dev)

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(dev)
        return nn.functional.cross_entropy(head(mm.features(encoder, mm.pixel_values(images[idx]))), labels[idx])

    return train_under_head(encoder, params, len(labels), step_loss, epochs=epochs, lr=lr, batch=batch, seed=seed,
                            description=description)


@torch.inference_mode()
def encode_all(encoder: nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Pooled features of many images, batched, on the encoder's device."""
    dev = next(encoder.parameters()).device
    encoder.eval()
    parts = [mm.features(encoder, mm.pixel_values(torch.from_numpy(images[i : i + batch]).to(dev)))
             for i in range(0, len(images), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, encoder.config.hidden_size, device=dev)


def evaluate(encoder: nn.Module, head: nn.Module, arrays: TaskArrays, batch: int = 256) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(encoder(x))`` over a split, batched.

    Scores through :func:`fusionbench_core.protocols.task_logits` (see
    :func:`fusionbench_core.engine.expert_suite.evaluate_head`).
    """
    dev = next(encoder.parameters()).device
    batches = ((mm.pixel_values(torch.from_numpy(arrays.images[i : i + batch]).to(dev)),
                torch.from_numpy(arrays.labels[i : i + batch]).to(dev)) for i in range(0, len(arrays.labels), batch))
    return evaluate_head(encoder, head, batches, mm.features)


# --------------------------------------------------------------------------- the suite on disk


def suite_dir(profile: Profile) -> Path:
    """The cache directory of a built variant (not created)."""
    from fusionbench_core.hub import cache_dir

    return cache_dir("suites", SUITE) / f"{profile.name}-{profile.fingerprint()}"


def store(profile: Profile) -> SuiteStore:
    """The store (layout and build state) of a variant."""
    return SuiteStore(suite_dir(profile))


def pretrained_dir(profile: Profile) -> Path:
    """Directory of the pretrained encoder."""
    return store(profile).pretrained_dir


def head_path(profile: Profile, task: str) -> Path:
    """File of a task's head (fitted on pretrained features)."""
    return store(profile).head_path(task)


def expert_dir(profile: Profile, seed: int, task: str) -> Path:
    """Directory of one expert."""
    return store(profile).expert_dir(seed, task)


def is_built(profile: Profile, seed: int) -> bool:
    """Whether the pretrained encoder, every head and every expert of ``seed`` are on disk."""
    return store(profile).is_built(seed, profile.tasks)


def _build_pretrained(profile: Profile, dev: torch.device) -> str:
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
    return f"built in {info['seconds']} s ({PRETRAIN_TASK} val acc {info['validation_accuracy']:.3f})"


def _fit_task_head(profile: Profile, pretrained: nn.Module, task: str) -> nn.Linear:
    train_set = task_arrays(task, "train", profile.train_examples)
    return fit_head(encode_all(pretrained, train_set.images), train_set.labels, train_set.classes)


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
    mm.quiet_transformers()
    dev = device()
    return build_expert_suite(
        store(profile), suite=SUITE, variant=profile.name, tasks=profile.tasks, seed=seed, dev=dev,
        write_pretrained=lambda: _build_pretrained(profile, dev),
        load_pretrained=lambda: mm.load_encoder(pretrained_dir(profile)).to(dev),
        fit_task_head=lambda pretrained, task: _fit_task_head(profile, pretrained, task),
        train_expert=lambda pretrained, head, task, label: _build_expert(profile, seed, task, pretrained, head, dev,
                                                                         label),
        force=force, stop_after=stop_after,
    )
