"""Building mini-compositional: mini-vision's pretrained encoder, one fixed head per category, held-in experts, multitask.

1. **Pretrained**: mini-vision's Fashion-MNIST-pretrained ``CLIPVisionModel`` encoder of the
   matching variant (full for full, quick for quick), copied from mini-vision's cache when built
   there, else trained by mini-vision's own builder with its own settings (the same bytes either
   way). Pretraining never sees an emoji.
2. **Heads**: one :class:`~fusionbench_core.suitekit.heads.CosineHead` per *category*, the mini
   recipe (centred class means of the pretrained encoder's features at scale 16), from the
   category's shot emoji drawn by every artist. Both pairs of a category carry that same head, so
   any encoder can be scored on any pair, held in or held out.
3. **Experts**: one per held-in pair, fine-tuned under its category's frozen head on that pair's
   train split (the suite kit's :meth:`~fusionbench_core.suitekit.builder.SuiteBuilder.build_expert`).
4. **Multitask**: one encoder fine-tuned on the union of the held-in pairs' train splits, each
   example under its own category's head, for the same number of epochs (Tam et al.'s reference).

Layout under ``$FUSIONBENCH_CACHE/suites/mini-compositional/<variant>-<fingerprint>/``: the kit's
(``pretrained/``, ``heads/<pair>.safetensors`` for every pair, ``seed<N>/<held-in pair>/``) plus
``seed<N>/multitask/``.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.suitekit.builder import settings_fingerprint
from fusionbench_core.suitekit.store import HEAD_FILE, INFO_FILE, MODEL_FILE, save_head
from fusionbench_core.suitekit.training import task_seed, train_under_head
from torch import nn

from ..mini import build as mini
from ..mini import model as mm
from . import data as cd

SUITE = "mini-compositional"
CODE_VERSION = 1
MULTITASK = "multitask"
"""The name of the multitask model (trained on every held-in pair) in the store and the model pool."""


def _mini_fingerprint(variant: str) -> str:
    return mini.PROFILES[variant].fingerprint()


@dataclass(frozen=True)
class Profile:
    """Every setting that determines a built variant (its fingerprint names the cache directory)."""

    name: str
    tasks: tuple[str, ...] = field(default_factory=lambda: tuple(cd.held_in()))
    """The held-in pairs: one expert each."""
    held_out: tuple[str, ...] = field(default_factory=lambda: tuple(cd.held_out()))
    backbone: str = "full"
    """The mini-vision variant whose pretrained encoder is used."""
    backbone_fingerprint: str = ""
    head_shots: int = cd.SHOT_EMOJI
    head_scale: float = 16.0
    train_examples: int = 10_000
    """Cap on fine-tuning images per pair (all of them: at most 192)."""
    epochs: int = 30
    lr: float = 3e-4
    batch: int = 32
    eval_examples: int | None = None
    test_examples: int | None = None
    min_emoji: int = cd.MIN_EMOJI

    def fingerprint(self) -> str:
        """A short hash of the settings, the mini-vision backbone's fingerprint and the build code's version."""
        return settings_fingerprint(CODE_VERSION, self)

    def encoder_config(self) -> Any:
        """The ``CLIPVisionConfig`` of the mini-vision variant used."""
        return mini.PROFILES[self.backbone].encoder_config()

    @property
    def pairs(self) -> tuple[str, ...]:
        """Held-in pairs, then held-out pairs."""
        return (*self.tasks, *self.held_out)


PROFILES: Mapping[str, Profile] = {
    "full": Profile("full", backbone="full", backbone_fingerprint=_mini_fingerprint("full")),
    "quick": Profile("quick", backbone="quick", backbone_fingerprint=_mini_fingerprint("quick"), epochs=8),
}
"""``full`` (``fb suites build mini-compositional``) and ``quick`` (``--quick``, for CI)."""


def packaged_pair_arrays(task: str, split: str) -> mini.TaskArrays:
    """A split of a pair from the emoji packages (:func:`.data.pair_arrays`)."""
    images, labels, classes = cd.pair_arrays(task, split)
    return mini.TaskArrays(images, labels, classes)


def _concat(parts: list[mini.TaskArrays]) -> mini.TaskArrays:
    return mini.TaskArrays(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                           parts[0].classes)


class CompositionalBuilder(mini.MiniVisionBuilder):
    """The mini-compositional build: mini-vision's network and pretrained encoder, the emoji grid's data.

    ``data_source(pair, split)`` returns a :class:`~fusionbench_vision.mini.build.TaskArrays` for a
    split among ``shots``, ``train``, ``validation`` and ``test`` (default: the emoji packages).
    """

    suite = SUITE
    default_profiles = PROFILES
    eval_batch_size = 256

    def packaged_arrays(self, task: str, split: str) -> mini.TaskArrays:
        """A split of a pair from the emoji packages."""
        return packaged_pair_arrays(task, split)

    def head_examples(self, profile: Profile, task: str) -> mini.TaskArrays:
        """The category's shot emoji drawn by every artist (the same for both pairs of a category)."""
        category = cd.category_of(task)
        return _concat([self.task_arrays(profile, cd.pair_name(category, d.name), "shots") for d in cd.DOMAINS])

    def training_examples(self, profile: Profile, task: str) -> mini.TaskArrays:
        """The pair's train split (shots are a split of their own), at most ``train_examples``."""
        return self.task_arrays(profile, task, "train", profile.train_examples)

    def write_pretrained(self, profile: Profile, directory: Path, device: torch.device) -> str:
        """Copy mini-vision's pretrained encoder of the variant, training it with mini-vision's builder if not built."""
        source_profile = mini.PROFILES[profile.backbone]
        source = mini.BUILDER.store(source_profile).pretrained_dir
        if (source / MODEL_FILE).exists():
            from fusionbench_core.suitekit.splits import write_directory_atomic

            write_directory_atomic(directory, lambda tmp: [shutil.copyfile(p, tmp / p.name)
                                                           for p in sorted(source.iterdir()) if p.is_file()])
            return f"copied from {source}"
        return "trained: " + mini.BUILDER.write_pretrained(source_profile, directory, device)

    def is_built(self, profile: Profile, seed: int) -> bool:
        """Experts, every pair's head and the multitask model of ``seed`` are on disk."""
        store = self.store(profile)
        return (store.is_built(seed, profile.tasks) and all(store.head_path(p).exists() for p in profile.held_out)
                and (store.expert_dir(seed, MULTITASK) / HEAD_FILE).exists())

    def build(self, profile: Profile, seed: int = 0, *, force: bool = False,
              stop_after: int | None = None) -> dict[str, Any]:
        """The kit's build (pretrained, held-in heads, experts), then the held-out pairs' heads and the multitask model."""
        summary = super().build(profile, seed, force=force, stop_after=stop_after)
        if "stopped" in summary:
            return summary
        start = time.perf_counter()
        store = self.store(profile)
        by_category = {cd.category_of(p): p for p in profile.tasks}
        for pair in profile.held_out:
            if not store.head_path(pair).exists():
                save_head(store.head_path(pair), self.load_head(store.head_path(by_category[cd.category_of(pair)])))
        target = store.expert_dir(seed, MULTITASK)
        if (target / HEAD_FILE).exists():
            info = json.loads((target / INFO_FILE).read_text())
            summary["multitask"] = "cached"
        else:
            from fusionbench_core.engine.devices import resolve_device

            dev = resolve_device("auto")
            pretrained = self.load_backbone(store.pretrained_dir).to(dev)
            info = self.build_multitask(profile, seed, pretrained, target, dev)
            summary["multitask"] = f"trained in {info['seconds']} s"
        summary["multitask"] += f", val acc {info['validation_accuracy']:.3f} (held-in average)"
        summary["seconds"] = round(summary["seconds"] + time.perf_counter() - start, 1)
        return summary

    def build_multitask(self, profile: Profile, seed: int, pretrained: nn.Module, directory: Path,
                        device: torch.device) -> dict[str, Any]:
        """Fine-tune one encoder on every held-in pair at once, each example under its category's head."""
        store = self.store(profile)
        backbone = copy.deepcopy(pretrained).to(device)
        heads = [self.load_head(store.head_path(t)).to(device) for t in profile.tasks]
        parts = [self.training_examples(profile, t) for t in profile.tasks]
        images = torch.from_numpy(np.ascontiguousarray(np.concatenate([p.images for p in parts]))).to(device)
        labels = torch.from_numpy(np.concatenate([p.labels for p in parts])).to(device)
        owner = torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)]).to(device)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(device)
            feats = mm.features(backbone, mm.pixel_values(images[idx]))
            total = feats.new_zeros(())
            for k, head in enumerate(heads):
                mask = owner[idx] == k
                if bool(mask.any()):
                    total = total + nn.functional.cross_entropy(head(feats[mask]), labels[idx][mask], reduction="sum")
            return total / len(idx)

        start = time.perf_counter()
        final = train_under_head(backbone, list(backbone.parameters()), len(labels), loss, epochs=profile.epochs,
                                 lr=profile.lr, batch=profile.batch, seed=task_seed(seed, MULTITASK),
                                 description=f"{SUITE}: multitask ({len(profile.tasks)} held-in pairs)")
        per_pair = {t: self.evaluate(backbone, h, self.validation_examples(profile, t))["accuracy"]
                    for t, h in zip(profile.tasks, heads)}
        info = {"task": MULTITASK, "seed": seed, "train_examples": int(len(labels)), "train_loss": final,
                "seconds": round(time.perf_counter() - start, 1), "device": str(device),
                "validation_accuracy": sum(per_pair.values()) / len(per_pair),
                "validation_accuracy_per_pair": per_pair}
        mm.write_model_dir(directory, profile.encoder_config(), mm.checkpoint_state(backbone),
                           head=mm.head_state(heads[0]), extra=info)
        return info


BUILDER = CompositionalBuilder()
"""The suite's own build: the emoji packages and :data:`PROFILES` (what ``fb`` uses)."""
