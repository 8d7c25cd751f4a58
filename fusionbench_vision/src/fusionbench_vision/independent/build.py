"""Training the independent suites: the same network from N random inits, on MNIST-5k or on halves of its labels.

A *suite* is an architecture and a setting: ``same`` (every model on all ten digits, Git Re-Basin's
setting) or ``halves`` (one model on digits 0-4, one on 5-9, ZipIt!'s setting). A *variant*
(``full`` or ``quick``) fixes widths, epochs and examples; its fingerprint names its cache
directory, so a changed profile never reuses stale models. Each model is one directory::

    $FUSIONBENCH_CACHE/suites/independent/<suite>-<variant>-<fingerprint>/seed<S>/<model>/
        {config.json, model.safetensors, info.json}

written to a temporary sibling and renamed when complete, so an interrupted build resumes with the
models that are missing. Model ``i`` of pool seed ``S`` is initialised and shuffled from seed
``1000·S + i``; training is deterministic on one machine (same seed, same bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import model_from_state, new_model

DATA_TASK = "mnist"
HALVES = {"mnist_0_4": (0, 1, 2, 3, 4), "mnist_5_9": (5, 6, 7, 8, 9)}
"""The ZipIt! setting's two tasks: the label halves (each a 5-way task)."""
MEAN, STD = 0.10, 0.28
"""Normalisation of the padded MNIST-5k pixels (their mean and standard deviation, rounded)."""


@dataclass(frozen=True)
class Profile:
    """The build settings of one variant of one architecture."""

    name: str
    architecture: str
    shape: tuple[int, ...]
    epochs: int
    lr: float
    batch_size: int = 128
    train_examples: int = 3500
    test_examples: int = 1000
    weight_decay: float = 0.0

    def fingerprint(self) -> str:
        """Digest of every setting (part of the cache directory's name)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def config(self) -> dict[str, Any]:
        """The network config."""
        key = "widths" if self.architecture == "wide-mlp" else "channels"
        return {"architecture": self.architecture, key: list(self.shape)}


PROFILES = {
    ("wide-mlp", "full"): Profile("full", "wide-mlp", (512, 512, 512), epochs=25, lr=1e-3),
    ("wide-mlp", "quick"): Profile("quick", "wide-mlp", (64, 64, 64), epochs=6, lr=2e-3, train_examples=1000,
                                   test_examples=500),
    ("small-resnet", "full"): Profile("full", "small-resnet", (16, 16, 32, 32, 64, 64), epochs=10, lr=3e-3),
    ("small-resnet", "quick"): Profile("quick", "small-resnet", (8, 8, 8, 16, 16, 16), epochs=5, lr=3e-3,
                                       train_examples=1000, test_examples=500),
}


def cache_root() -> Path:
    """``$FUSIONBENCH_CACHE`` (default ``~/.cache/fusionbench``)."""
    env = os.environ.get("FUSIONBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fusionbench"


def member_seed(seed: int, index: int) -> int:
    """The init and shuffling seed of model ``index`` of pool seed ``seed``."""
    return 1000 * seed + index


# --------------------------------------------------------------------------- data


@lru_cache(maxsize=2)
def split_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-5k's split as normalised grey images ``float32[N, 1, 32, 32]`` and labels ``int64[N]``."""
    from ..mini.data import as_arrays, load_task

    images, labels = as_arrays(load_task(DATA_TASK)[split])
    x = torch.from_numpy(images[..., 0].astype(np.float32) / 255.0).unsqueeze(1)
    return (x - MEAN) / STD, torch.from_numpy(labels)


def task_data(task: str, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A task's examples (``mnist``, or a half with labels renumbered 0-4) in the split's stratified order."""
    x, y = split_tensors(split)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if task in HALVES:
        classes = torch.tensor(HALVES[task])
        keep = torch.isin(y, classes)
        return x[keep], torch.searchsorted(classes, y[keep])
    return x, y


def training_data(member_task: str, profile: Profile) -> tuple[torch.Tensor, torch.Tensor]:
    """What a model trains on: its task's training examples, labels as digits 0-9 (the network has 10 outputs)."""
    x, y = split_tensors("train")
    x, y = x[: profile.train_examples], y[: profile.train_examples]
    if member_task in HALVES:
        keep = torch.isin(y, torch.tensor(HALVES[member_task]))
        x, y = x[keep], y[keep]
    return x, y


# --------------------------------------------------------------------------- training


def train_model(profile: Profile, member_task: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Train one network from the random init of ``seed`` with Adam on its task's data."""
    x, y = training_data(member_task, profile)
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = new_model(profile.config())
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    steps_per_epoch = (len(x) + profile.batch_size - 1) // profile.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=profile.lr,
                                                    total_steps=profile.epochs * steps_per_epoch)
    model.train()
    for _ in range(profile.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), profile.batch_size):
            idx = order[i : i + profile.batch_size]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            scheduler.step()
    model.eval()
    info = {"task": member_task, "seed": seed, "train_examples": len(x), "train_s": round(time.perf_counter() - start, 2),
            "final_batch_loss": round(float(loss.detach()), 6)}
    return model, info


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class Suite:
    """One independent suite: its name, architecture, setting and members."""

    name: str
    architecture: str
    setting: str

    def profile(self, quick: bool) -> Profile:
        """The variant's profile."""
        return PROFILES[(self.architecture, "quick" if quick else "full")]

    def members(self, n_models: int) -> dict[str, str]:
        """``{model name: the task it trains on}``."""
        if self.setting == "halves":
            return {task: task for task in HALVES}
        return {f"init{i}": DATA_TASK for i in range(n_models)}

    def tasks(self) -> list[str]:
        """The tasks the suite is scored on (``mnist`` first)."""
        return [DATA_TASK, *HALVES] if self.setting == "halves" else [DATA_TASK]

    def root(self, quick: bool) -> Path:
        """The variant's cache directory."""
        profile = self.profile(quick)
        return cache_root() / "suites" / "independent" / f"{self.name}-{profile.name}-{profile.fingerprint()}"

    def model_dir(self, quick: bool, seed: int, name: str) -> Path:
        """One model's directory."""
        return self.root(quick) / f"seed{seed}" / name

    def build(self, quick: bool = False, seed: int = 0, n_models: int = 2, force: bool = False) -> dict[str, Any]:
        """Train every missing model (all with ``force``); returns what was trained and how long it took."""
        profile = self.profile(quick)
        trained, start = [], time.perf_counter()
        for index, (name, task) in enumerate(self.members(n_models).items()):
            directory = self.model_dir(quick, seed, name)
            if (directory / "model.safetensors").exists() and not force:
                continue
            print(f"{self.name} ({profile.name}, seed {seed}): training {name}", file=sys.stderr)
            model, info = train_model(profile, task, member_seed(seed, index))
            write_model(directory, model, info)
            trained.append(name)
        return {"trained": trained, "build_s": round(time.perf_counter() - start, 2), "cache": str(self.root(quick))}


def write_model(directory: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """``config.json`` + ``model.safetensors`` + ``info.json`` in a temporary sibling, renamed into place."""
    from safetensors.torch import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config(), indent=2, sort_keys=True) + "\n")
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_model(directory: Path) -> nn.Module:
    """The network saved in a model directory, in eval mode."""
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    return model_from_state(config["architecture"], load_file(str(directory / "model.safetensors")))


SUITES = {
    "independent-mlp": Suite("independent-mlp", "wide-mlp", "same"),
    "independent-cnn": Suite("independent-cnn", "small-resnet", "same"),
    "independent-mlp-halves": Suite("independent-mlp-halves", "wide-mlp", "halves"),
    "independent-cnn-halves": Suite("independent-cnn-halves", "small-resnet", "halves"),
}
