"""Building the mini-vision suite: pretrain once, derive one fixed head per task, fine-tune one expert per task.

1. **Pretrained**: a ``CLIPVisionModel``-architecture encoder trained from scratch on Fashion-MNIST
   (the pretraining set, never a task; always seed 0, so every expert seed shares it).
2. **Heads**: for every task a :class:`~fusionbench_core.suitekit.heads.CosineHead`, the form of
   CLIP's zero-shot heads (a fixed scale times a cosine, no bias), whose class vectors are
   few-shot prototypes: the *pretrained* encoder's centred mean features of
   :attr:`Profile.head_shots` training images per class. Those images are held out of the
   experts' training and of every evaluation. No image-text model exists offline, so a handful of
   labelled images stands in for CLIP's class names: like a text head, the prototypes are fixed
   by the pretrained model before any fine-tuning, cost no training on the task, and leave the
   pretrained model a real zero-shot-like baseline rather than the best linear probe on its own
   features (which left the experts nothing to gain).
3. **Experts**: the encoder fine-tuned on each task with that task's head frozen, so the whole
   task vector lives in the encoder and any merged encoder is scored with each task's own head,
   the role CLIP's zero-shot text heads play in the CLIP suites.

The design (scale, shots, learning rate, epochs, pretraining length) was chosen on the validation
splits from the suite's own properties (expert gain over the pretrained model, and the gap the
simple average leaves), never from how merge methods rank on test: see ``docs/results/mini.md``.

Everything is seeded and runs in a fixed data order, so a build on one machine (and thread count)
gives the same bytes every time. The steps, the store and resumption are the suite kit's
(:class:`fusionbench_core.suitekit.builder.SuiteBuilder`); :class:`MiniVisionBuilder` supplies the
encoder, the images and the pretraining. Layout under
``$FUSIONBENCH_CACHE/suites/mini-vision/<variant>-<fingerprint>/``::

    pretrained/{config.json, model.safetensors, info.json}
    heads/<task>.safetensors
    seed<N>/<task>/{config.json, model.safetensors, head.safetensors, info.json}

The fingerprint hashes the variant's settings, so changing a setting never reuses stale models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.suitekit.builder import SuiteBuilder, settings_fingerprint
from torch import nn

from . import model as mm

SUITE = "mini-vision"
CODE_VERSION = 3
"""3: experts leave the patch and position embeddings frozen, 15 epochs (2: cosine few-shot prototype heads
and eight tasks; 1: fitted linear probes, six tasks)."""
PRETRAIN_TASK = "fashion_mnist"
EXPERT_TASKS = ("mnist", "digits", "font_digits", "font_letters", "twemoji", "noto_emoji", "emoji_subcategory",
                "skin_tone")
QUICK_TASKS = ("mnist", "digits", "twemoji", "noto_emoji", "emoji_subcategory", "skin_tone")
"""The quick variant (CI) leaves out the two font tasks: after one epoch of pretraining on 12,000 images their
experts stay at chance (measured: font_letters 3.7 % against the pretrained 4.0 % on 400 test images)."""


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
    pretrain_epochs: int = 3
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 128
    head_shots: int = 16
    """Training images per class that a task's prototype head is made of (held out of fine-tuning)."""
    head_scale: float = 16.0
    """The heads' fixed logit scale (chosen on validation among 16, 40 and 100: 16 gave the strongest experts)."""
    train_examples: int = 2_000
    """Cap on fine-tuning images per task (after the head's shots are taken out)."""
    epochs: int = 15
    lr: float = 3e-4
    frozen: tuple[str, ...] = ("embeddings", "pre_layrnorm")
    """Parameter-name prefixes the experts do not fine-tune (their task vectors are zero there). Chosen on
    validation: with the whole encoder fine-tuned, the embeddings' task vectors carried most of the
    interference (see docs/suites-mini.md, "How the design was chosen")."""
    batch: int = 64
    eval_examples: int | None = 500
    """Cap on validation images used for the build summary (None: all)."""
    test_examples: int | None = None
    """Cap on test (and validation) images per task when a task pool scores (None: all)."""

    def fingerprint(self) -> str:
        """A short hash of the settings and the build code's version."""
        return settings_fingerprint(CODE_VERSION, self)

    def encoder_config(self) -> Any:
        """The encoder's ``CLIPVisionConfig``."""
        return mm.encoder_config(width=self.width, layers=self.layers, heads=self.heads, mlp=self.mlp, patch=self.patch)


PROFILES: Mapping[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", tasks=QUICK_TASKS, pretrain_examples=12_000, pretrain_epochs=1, train_examples=1_000,
                     eval_examples=300),
}
"""The two variants: ``full`` (``fb suites build mini-vision``) and ``quick`` (``--quick``, for CI)."""


@dataclass(frozen=True)
class TaskArrays:
    """One split of one task as arrays: ``uint8[N, 32, 32, 3]`` images, ``int64[N]`` labels."""

    images: np.ndarray
    labels: np.ndarray
    classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> TaskArrays:
        """The first ``limit`` examples (all when None)."""
        if limit is None or limit >= len(self.labels):
            return self
        return TaskArrays(self.images[:limit], self.labels[:limit], self.classes)

    def take(self, indices: np.ndarray) -> TaskArrays:
        """The examples at ``indices``, in that order."""
        return TaskArrays(self.images[indices], self.labels[indices], self.classes)


def packaged_task_arrays(task: str, split: str) -> TaskArrays:
    """A split of a task from the packaged sources (see :mod:`fusionbench_vision.mini.data`)."""
    from . import data

    dsd = data.load_task(task, seed=0)
    images, labels = data.as_arrays(dsd[split])
    return TaskArrays(images, labels, dsd[split].features["label"].num_classes)


class MiniVisionBuilder(SuiteBuilder):
    """The mini-vision build: a small CLIP-architecture encoder, 32x32 images, Fashion-MNIST pretraining.

    ``data_source(task, split)`` returns :class:`TaskArrays` (default: the packaged sources).
    """

    suite = SUITE
    default_profiles = PROFILES
    eval_batch_size = 256

    def packaged_arrays(self, task: str, split: str) -> TaskArrays:
        """A split of a task from the packaged sources."""
        return packaged_task_arrays(task, split)

    def setup(self) -> None:
        """Silence transformers."""
        mm.quiet_transformers()

    def load_backbone(self, directory: Path) -> nn.Module:
        """The encoder of a model directory, as a ``CLIPVisionModel`` in eval mode."""
        return mm.load_encoder(directory)

    def features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The encoder's pooled output (``post_layernorm`` of the class token)."""
        return mm.features(model, inputs)

    def batches(self, examples: TaskArrays, batch_size: int,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(pixel_values, labels)`` on ``device``."""
        for i in range(0, len(examples.labels), batch_size):
            yield (mm.pixel_values(torch.from_numpy(examples.images[i : i + batch_size]).to(device)),
                   torch.from_numpy(examples.labels[i : i + batch_size]).to(device))

    def step_loss(self, backbone: nn.Module, head: nn.Module,
                  examples: TaskArrays) -> Callable[[torch.Tensor], torch.Tensor]:
        """Cross-entropy of ``head(encoder(x))`` on the images at some indices (all images on the device once)."""
        dev = next(backbone.parameters()).device
        images = torch.from_numpy(np.ascontiguousarray(examples.images)).to(dev)
        labels = torch.from_numpy(examples.labels).to(dev)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(dev)
            return nn.functional.cross_entropy(head(mm.features(backbone, mm.pixel_values(images[idx]))), labels[idx])

        return loss

    def write_pretrained(self, profile: Profile, directory: Path, device: torch.device) -> str:
        """Pretrain the encoder (with a throw-away head) on Fashion-MNIST, always seed 0."""
        config = profile.encoder_config()
        encoder = mm.new_encoder(config, seed=0).to(device)
        train_set = self.task_arrays(profile, PRETRAIN_TASK, "train", profile.pretrain_examples)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            head = nn.Linear(profile.width, train_set.classes)
        head = head.to(device)
        start = time.perf_counter()
        loss = self.train(encoder, head, train_set, params=[*encoder.parameters(), *head.parameters()],
                          epochs=profile.pretrain_epochs, lr=profile.pretrain_lr, batch=profile.pretrain_batch, seed=0,
                          description=f"{SUITE}: pretraining on {PRETRAIN_TASK}")
        info = {"task": PRETRAIN_TASK, "train_examples": len(train_set.labels), "train_loss": loss,
                "seconds": round(time.perf_counter() - start, 1), "device": str(device)}
        val = self.task_arrays(profile, PRETRAIN_TASK, "validation", profile.eval_examples)
        info["validation_accuracy"] = self.evaluate(encoder, head, val)["accuracy"]
        mm.write_model_dir(directory, config, mm.checkpoint_state(encoder), extra=info)
        return f"built in {info['seconds']} s ({PRETRAIN_TASK} val acc {info['validation_accuracy']:.3f})"

    def save_expert(self, profile: Profile, directory: Path, backbone: nn.Module, head: nn.Module,
                    info: Mapping[str, Any]) -> None:
        """Write the expert encoder with the profile's config, its head and ``info.json``."""
        mm.write_model_dir(directory, profile.encoder_config(), mm.checkpoint_state(backbone),
                           head=mm.head_state(head), extra=info)


BUILDER = MiniVisionBuilder()
"""The suite's own build: the packaged data and :data:`PROFILES` (what ``fb`` uses)."""
