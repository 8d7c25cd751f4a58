"""The build of an expert suite: one class, subclassed once per suite.

:class:`SuiteBuilder` is a template method. :meth:`SuiteBuilder.build` writes the pretrained
backbone, derives one frozen head per task from it (:meth:`SuiteBuilder.make_head`), fine-tunes
one expert per task under its head (:meth:`SuiteBuilder.build_expert`) and resumes from whatever
is already on disk, one expert at a time. A suite subclass supplies the rest through the methods
marked "suite hook": its network (:meth:`~SuiteBuilder.load_backbone`,
:meth:`~SuiteBuilder.features`, :meth:`~SuiteBuilder.batches`, :meth:`~SuiteBuilder.step_loss`,
:meth:`~SuiteBuilder.write_pretrained`, :meth:`~SuiteBuilder.save_expert`) and its packaged data
(:meth:`~SuiteBuilder.packaged_arrays`).

Profiles (the build settings of each variant, ``full`` and ``quick``) and the data source are
given to the constructor, so a test or a script builds a suite on other data or settings by
constructing a builder, not by changing a module's globals::

    builder = MiniVisionBuilder(profiles={"full": tiny, "quick": tiny_quick}, data_source=synthetic)
    builder.build(builder.profile_for(quick=True), seed=0)

A profile is a frozen dataclass with at least ``name``, ``tasks``, ``train_examples`` (cap on
training examples per task), ``eval_examples`` (cap on validation examples for the build
summary), ``epochs``, ``lr``, ``batch`` and ``fingerprint()``; see :class:`BuildProfile`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from .heads import cosine_head
from .store import HEAD_FILE, INFO_FILE, MODEL_FILE, SuiteStore, load_head, save_head
from .training import score_head, task_seed, train_under_head

__all__ = ["BuildProfile", "SuiteBuilder", "TaskExamples", "settings_fingerprint", "shot_indices"]


def shot_indices(labels: Any, shots: int, classes: int) -> tuple[Any, Any]:
    """``(shots, rest)``: the positions of the first ``shots`` examples of each class, and all the others, in order.

    Splits are in a seeded, stratified random order, so the first examples of a class are a
    random sample of it.
    """
    import numpy as np

    labels = np.asarray(labels)
    taken = np.zeros(classes, dtype=np.int64)
    chosen = np.zeros(len(labels), dtype=bool)
    for i, label in enumerate(labels.tolist()):
        if taken[label] < shots:
            taken[label] += 1
            chosen[i] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def settings_fingerprint(code_version: int, settings: Any) -> str:
    """A 10-hex-digit hash of a settings dataclass and the build code's version (names the cache directory)."""
    blob = json.dumps({"code": code_version, **dataclasses.asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


class BuildProfile(Protocol):
    """What the kit reads of a suite's build profile (the settings of one variant)."""

    name: str
    tasks: tuple[str, ...]
    train_examples: int
    eval_examples: int | None
    epochs: int
    lr: float
    batch: int
    head_scale: float
    """The fixed scale of every task's cosine head (CLIP's is 100)."""
    head_shots: int
    """Examples per class of the train split that the head is derived from (0: the suite supplies its own)."""
    test_examples: int | None
    """Cap on test (and validation) examples per task when a task pool scores (None: all)."""

    def fingerprint(self) -> str:
        """A short hash of every setting (names the variant's cache directory)."""


class TaskExamples(Protocol):
    """One split of one task in a suite's own array form (images, token ids...)."""

    labels: Any
    """``int64[N]`` numpy labels."""
    classes: int

    def __len__(self) -> int:
        """The number of examples."""

    def head(self, limit: int | None) -> TaskExamples:
        """The first ``limit`` examples (all when None)."""

    def take(self, indices: Any) -> TaskExamples:
        """The examples at ``indices`` (an ``int64`` numpy array), in that order."""


class SuiteBuilder:
    """The build of one expert suite: its variants, its store, its task data and the build itself.

    A subclass sets :attr:`suite`, :attr:`default_profiles` and :attr:`eval_batch_size` and
    implements the suite hooks. ``profiles`` (``{"full": ..., "quick": ...}``) and
    ``data_source`` (called with :meth:`source_arguments`, returning :class:`TaskExamples`)
    default to the suite's own profiles and :meth:`packaged_arrays`.
    """

    suite: ClassVar[str] = ""
    """The suite's name (its cache directory is ``$FUSIONBENCH_CACHE/suites/<suite>/``)."""
    default_profiles: ClassVar[Mapping[str, Any]] = {}
    """The suite's own variants, by name (``full`` and ``quick``)."""
    eval_batch_size: ClassVar[int] = 128
    """Batch size of feature extraction and scoring during the build."""

    def __init__(self, profiles: Mapping[str, Any] | None = None,
                 data_source: Callable[..., TaskExamples] | None = None):
        self.profiles: dict[str, Any] = dict(self.default_profiles if profiles is None else profiles)
        self.data_source: Callable[..., TaskExamples] = self.packaged_arrays if data_source is None else data_source
        self._arrays: dict[tuple[Any, ...], TaskExamples] = {}

    # -- variants and the store

    def profile_for(self, quick: bool) -> Any:
        """The ``quick`` or ``full`` profile."""
        return self.profiles["quick" if quick else "full"]

    def suite_dir(self, profile: Any) -> Path:
        """The cache directory of a built variant (not created)."""
        from fusionbench_core.hub import cache_dir

        return cache_dir("suites", self.suite) / f"{profile.name}-{profile.fingerprint()}"

    def store(self, profile: Any) -> SuiteStore:
        """The store (layout and build state) of a variant."""
        return SuiteStore(self.suite_dir(profile))

    # -- data

    def packaged_arrays(self, *arguments: Any) -> TaskExamples:
        """Suite hook: a split of a task from the packaged sources (called with :meth:`source_arguments`)."""
        raise NotImplementedError

    def source_arguments(self, profile: Any, task: str, split: str) -> tuple[Any, ...]:
        """What the data source is called with for a split: ``(task, split)``; a suite may add settings."""
        return (task, split)

    def task_arrays(self, profile: Any, task: str, split: str, limit: int | None = None) -> TaskExamples:
        """A split of a task (memoised per builder), optionally its first ``limit`` examples.

        Splits are stratified prefixes (:func:`.splits.stratified_split`), so a prefix keeps the
        classes balanced.
        """
        key = self.source_arguments(profile, task, split)
        if key not in self._arrays:
            self._arrays[key] = self.data_source(*key)
        return self._arrays[key].head(limit)

    def head_examples(self, profile: Any, task: str) -> TaskExamples:
        """The examples a task's head is derived from: the first ``head_shots`` of each class in the train split.

        They are held out of the expert's training (:meth:`training_examples`) and of every
        evaluation, as the few labelled images a few-shot prototype head is allowed.
        """
        train = self.task_arrays(profile, task, "train")
        return train.take(shot_indices(train.labels, profile.head_shots, train.classes)[0])

    def training_examples(self, profile: Any, task: str) -> TaskExamples:
        """The examples an expert is fine-tuned on: the train split less :meth:`head_examples`, at most ``train_examples``."""
        train = self.task_arrays(profile, task, "train")
        rest = shot_indices(train.labels, profile.head_shots, train.classes)[1]
        return train.take(rest[: profile.train_examples])

    def validation_examples(self, profile: Any, task: str) -> TaskExamples:
        """The examples of the build summary's validation accuracy: the first ``eval_examples``."""
        return self.task_arrays(profile, task, "validation", profile.eval_examples)

    # -- the network (suite hooks)

    def setup(self) -> None:
        """Suite hook: run at the start of every build (silence a library's logging, say); default nothing."""

    def load_backbone(self, directory: Path) -> nn.Module:
        """Suite hook: the backbone saved in a model directory, in eval mode."""
        raise NotImplementedError

    def features(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Suite hook: the representation of ``inputs`` a head classifies."""
        raise NotImplementedError

    def batches(self, examples: TaskExamples, batch_size: int,
                device: torch.device | str = "cpu") -> Iterator[tuple[Any, torch.Tensor]]:
        """Suite hook: ``(inputs, labels)`` on ``device``, in order, ``batch_size`` examples at a time."""
        raise NotImplementedError

    def step_loss(self, backbone: nn.Module, head: nn.Module,
                  examples: TaskExamples) -> Callable[[torch.Tensor], torch.Tensor]:
        """Suite hook: a function from a CPU index tensor to the training loss of those examples."""
        raise NotImplementedError

    def write_pretrained(self, profile: Any, directory: Path, device: torch.device) -> str:
        """Suite hook: write (train or copy) the pretrained backbone's model directory; returns a summary line."""
        raise NotImplementedError

    def save_expert(self, profile: Any, directory: Path, backbone: nn.Module, head: nn.Module,
                    info: Mapping[str, Any]) -> None:
        """Suite hook: write an expert's model directory, with its head and ``info.json``."""
        raise NotImplementedError

    # -- heads

    def make_head(self, profile: Any, pretrained: nn.Module, task: str) -> nn.Module:
        """The frozen head of a task, derived from the pretrained backbone: a :class:`~.heads.CosineHead`.

        Its class vectors are the centred class means of the pretrained backbone's features of
        :meth:`head_examples` (:func:`.heads.cosine_head`), at the fixed ``head_scale``. It is
        saved with :func:`.store.save_head` (its ``state_dict``) and read back with :meth:`load_head`.
        """
        examples = self.head_examples(profile, task)
        return cosine_head(self.encode(pretrained, examples), examples.labels, examples.classes, profile.head_scale)

    def load_head(self, path: Path) -> nn.Module:
        """A frozen head from its file, in eval mode (the kind :meth:`make_head` makes)."""
        return load_head(path)

    # -- training and scoring

    def train(self, backbone: nn.Module, head: nn.Module, examples: TaskExamples, *, params: list[nn.Parameter],
              epochs: int, lr: float, batch: int, seed: int, description: str) -> float:
        """Minimise :meth:`step_loss` over ``params``; returns the last epoch's mean loss.

        The data order comes from a generator seeded by ``seed`` alone, so the result does not
        depend on anything trained before it (that is what makes resuming reproduce a full build).
        """
        return train_under_head(backbone, params, len(examples), self.step_loss(backbone, head, examples),
                                epochs=epochs, lr=lr, batch=batch, seed=seed, description=description)

    @torch.inference_mode()
    def encode(self, backbone: nn.Module, examples: TaskExamples, batch_size: int | None = None) -> torch.Tensor:
        """Features of many examples, batched, on the backbone's device."""
        dev = next(backbone.parameters()).device
        backbone.eval()
        parts = [self.features(backbone, inputs)
                 for inputs, _ in self.batches(examples, batch_size or self.eval_batch_size, dev)]
        return torch.cat(parts) if parts else torch.zeros(0, backbone.config.hidden_size, device=dev)

    def evaluate(self, backbone: nn.Module, head: nn.Module, examples: TaskExamples,
                 batch_size: int | None = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``head(features(backbone, x))`` over some examples, batched.

        Scores through :func:`fusionbench_core.protocols.task_logits` (see
        :func:`.training.evaluate_head`).
        """
        return self.score(backbone, head, examples, batch_size)[0]

    def score(self, backbone: nn.Module, head: nn.Module, examples: TaskExamples,
              batch_size: int | None = None) -> tuple[dict[str, float], Any]:
        """:meth:`evaluate` and the per-example :class:`~fusionbench_core.protocols.Predictions`.

        The predictions follow :meth:`scoring_batches`' order (the split's own order unless a
        suite reorders it, by length, say): fixed, so two models scored on a split pair up.
        """
        dev = next(backbone.parameters()).device
        return score_head(backbone, head, self.scoring_batches(examples, batch_size or self.eval_batch_size, dev),
                          self.features)

    def scoring_batches(self, examples: TaskExamples, batch_size: int,
                        device: torch.device | str = "cpu") -> Iterator[tuple[Any, torch.Tensor]]:
        """The batches :meth:`evaluate` scores: :meth:`batches` by default; a suite may reorder them (by length, say)."""
        return self.batches(examples, batch_size, device)

    # -- the build

    def fine_tuned_parameters(self, profile: Any, backbone: nn.Module) -> list[nn.Parameter]:
        """The parameters an expert fine-tunes: all but those named under the profile's ``frozen`` prefixes.

        A profile without a ``frozen`` field fine-tunes everything. Frozen parameters are also marked
        ``requires_grad=False``, so an expert's task vector is exactly zero on them.
        """
        frozen = tuple(getattr(profile, "frozen", ()))
        trained = []
        for name, parameter in backbone.named_parameters():
            if any(name == prefix or name.startswith(prefix + ".") for prefix in frozen):
                parameter.requires_grad_(False)
            else:
                trained.append(parameter)
        return trained

    def build_expert(self, profile: Any, seed: int, task: str, pretrained: nn.Module, head: nn.Module,
                     directory: Path, device: torch.device, label: str) -> dict[str, Any]:
        """Fine-tune one expert under its frozen head, write it to ``directory``; returns its ``info.json`` content."""
        backbone = copy.deepcopy(pretrained).to(device)
        head = copy.deepcopy(head).to(device)
        head.requires_grad_(False)
        train_set = self.training_examples(profile, task)
        start = time.perf_counter()
        loss = self.train(backbone, head, train_set, params=self.fine_tuned_parameters(profile, backbone),
                          epochs=profile.epochs,
                          lr=profile.lr, batch=profile.batch, seed=task_seed(seed, task),
                          description=f"{self.suite}: {label}")
        val = self.validation_examples(profile, task)
        info = {"task": task, "seed": seed, "train_examples": len(train_set), "train_loss": loss,
                "seconds": round(time.perf_counter() - start, 1), "device": str(device),
                "validation_accuracy": self.evaluate(backbone, head, val)["accuracy"],
                "pretrained_validation_accuracy": self.evaluate(pretrained, head, val)["accuracy"]}
        self.save_expert(profile, directory, backbone, head, info)
        return info

    def is_built(self, profile: Any, seed: int) -> bool:
        """Whether the pretrained backbone, every head and every expert of ``seed`` are on disk."""
        return self.store(profile).is_built(seed, profile.tasks)

    def build(self, profile: Any, seed: int = 0, *, force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Build (or finish building) one variant for one expert seed; returns a summary for ``fb suites build``.

        Steps, each skipped when its output is on disk: :meth:`write_pretrained`, a head per task
        (:meth:`make_head`, saved with :func:`.store.save_head`) and an expert per task
        (:meth:`build_expert`). ``force`` clears the pretrained backbone, the heads and this
        seed's experts first; ``stop_after`` stops after that many newly trained experts (how
        tests simulate an interrupted build).
        """
        from fusionbench_core.engine.devices import resolve_device
        from fusionbench_core.progress import track

        self.setup()
        dev = resolve_device("auto")
        store = self.store(profile)
        tasks = list(profile.tasks)
        if force:
            store.clear(seed)
        start = time.perf_counter()
        summary: dict[str, Any] = {"suite": self.suite, "variant": profile.name, "seed": seed,
                                   "directory": str(store.root), "device": str(dev)}
        summary["pretrained"] = (self.write_pretrained(profile, store.pretrained_dir, dev)
                                 if not (store.pretrained_dir / MODEL_FILE).exists() else "cached")
        pretrained = self.load_backbone(store.pretrained_dir).to(dev)
        missing_heads = [t for t in tasks if not store.head_path(t).exists()]
        for task in track(missing_heads, f"{self.suite}: heads from the pretrained backbone"):
            save_head(store.head_path(task), self.make_head(profile, pretrained, task))
        built, results = 0, {}
        for i, task in enumerate(tasks):
            target = store.expert_dir(seed, task)
            if (target / HEAD_FILE).exists():
                info = json.loads((target / INFO_FILE).read_text())
            else:
                if stop_after is not None and built >= stop_after:
                    summary["stopped"] = f"after {built} experts"
                    break
                info = self.build_expert(profile, seed, task, pretrained, self.load_head(store.head_path(task)),
                                         target, dev, f"{task} ({i + 1}/{len(tasks)})")
                built += 1
            results[task] = f"val acc {info['pretrained_validation_accuracy']:.3f} -> {info['validation_accuracy']:.3f}"
        summary["experts"] = f"{built} trained, {len(results) - built} cached"
        summary.update({f"expert {task}": text for task, text in results.items()})
        summary["seconds"] = round(time.perf_counter() - start, 1)
        return summary
