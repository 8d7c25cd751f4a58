"""The model pool and task pool over a built expert suite.

:class:`ExpertSuiteModelPool` serves the pretrained backbone and one expert per task from a
:class:`.store.SuiteStore`, building whatever is missing on first use; it hands out task batches
and scores any backbone with a task's frozen head (a data model pool).
:class:`ExpertSuiteTaskPool` scores a backbone on every task's test split with that task's head.

Both get everything suite-specific from a :class:`.builder.SuiteBuilder`: the class attribute
:attr:`~ExpertSuiteModelPool.builder`, or the ``builder`` argument of the constructor.

The variant (``quick`` or ``full``) a task pool scores with is explicit: its ``quick`` option, or
else the variant of the model pool it is bound to (:meth:`ExpertSuiteTaskPool.bind`, called by
the run program before evaluation), or else ``full``. Models carry no tag, so a fused model that
no pool built (an ensemble, say) is scored with the heads of the variant its members came from.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.protocols import PRETRAINED, DataRequest, EvaluationReport, Predictions, TensorSource

from .builder import SuiteBuilder
from .splits import SPLITS
from .store import MODEL_FILE
from .training import move_to

__all__ = ["ExpertSuiteModelPool", "ExpertSuiteTaskPool"]


class ExpertSuiteModelPool:
    """A data model pool over a built expert suite: the pretrained backbone and one expert per task.

    A subclass sets :attr:`suite`, :attr:`builder` and ``options`` and implements the suite hooks
    :meth:`read_config`, :meth:`backbone_from_state` and :meth:`save_model`; loading, batches
    and features come from the builder.
    """

    suite: ClassVar[str] = ""
    """The suite's name (``fb run -p NAME``)."""
    builder: SuiteBuilder
    """The suite's build: profiles, data, network, store (an instance's ``builder`` argument replaces it)."""
    seed_option: ClassVar[str] = "seed"
    """The option that follows the run's seed when not given (:func:`fusionbench_core.run.seed_bound`):
    ``fb run --seed 1`` and a sweep's seeds score the experts trained with that seed."""

    def __init__(self, name: str | None = None, seed: int = 0, quick: bool = False, *,
                 builder: SuiteBuilder | None = None):
        if builder is not None:
            self.builder = builder
        self.name = name or self.suite
        self.seed = seed
        self.quick = quick
        self.profile = self.builder.profile_for(quick)
        self.store = self.builder.store(self.profile)
        if not self.store.is_built(seed, self.profile.tasks):
            print(f"{self.suite} ({self.profile.name}, seed {seed}) is not built yet: building it now "
                  f"(once; cached under {self.store.root})", file=sys.stderr)
            self.builder.build(self.profile, seed)
        self.config = self.read_config(self.store.pretrained_dir)
        self._heads: dict[str, nn.Module] = {}
        self.forward_passes = 0

    # -- suite hooks

    def read_config(self, directory: Path) -> Any:
        """Suite hook: the backbone config saved in a model directory."""
        raise NotImplementedError

    def backbone_from_state(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """Suite hook: a backbone of ``self.config`` carrying ``state`` (strict)."""
        raise NotImplementedError

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Suite hook: save a backbone as a model directory (written to a temporary dir, renamed)."""
        raise NotImplementedError

    # -- from the builder

    def load_backbone(self, directory: Path) -> nn.Module:
        """The backbone saved in a model directory, in eval mode."""
        return self.builder.load_backbone(directory)

    def features(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """The representation of ``inputs`` a head classifies."""
        return self.builder.features(model, inputs)

    # -- the fb suites and fb modelpools show commands

    @classmethod
    def build_suite(cls, quick: bool = False, seed: int = 0, force: bool = False) -> dict[str, Any]:
        """``fb suites build NAME``: train what is missing (everything with ``force``)."""
        return cls.builder.build(cls.builder.profile_for(quick), seed, force=force)

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb suites show NAME``: the variants, what of them is built, and older builds.

        A variant's directory is named after its fingerprint (its settings and the build code's
        version), so a build of an earlier design sits beside the current one and is never read;
        it is listed under ``other builds`` so that a user knows it is there (and may delete it).
        """
        profiles = cls.builder.profiles
        cache = cls.builder.suite_dir(profiles["full"]).parent
        current = {cls.builder.suite_dir(p).name for p in profiles.values()}
        built = {}
        for name, profile in profiles.items():
            seeds = cls.builder.store(profile).built_seeds(profile.tasks)
            built[name] = (f"seeds {', '.join(map(str, seeds))}" if seeds else "not built")
        others = sorted(p.name for p in cache.iterdir() if p.is_dir() and p.name not in current) if cache.is_dir() else []
        return {"variants": {n: p.fingerprint() for n, p in profiles.items()},
                "built": built, "other builds (not used)": others or "none", "cache": str(cache)}

    def fingerprint(self) -> str:
        """A digest naming the models served: the variant's directory (its settings and code version) and the seed.

        Built models are deterministic functions of these (same settings, same bytes), so a sweep
        keyed by this digest reruns a cell when the suite's design or the seed changes.
        """
        import hashlib

        return hashlib.sha256(f"{self.store.root.name}/seed{self.seed}".encode()).hexdigest()

    def model_dir(self, name: str) -> Path:
        """Where ``name`` (or :data:`PRETRAINED`) lies on disk in the suite's store."""
        return self._dir(name)

    # -- ModelPool

    @property
    def model_names(self) -> list[str]:
        """The task names, one expert each."""
        return list(self.profile.tasks)

    @property
    def has_pretrained(self) -> bool:
        """Always true."""
        return True

    def _dir(self, name: str) -> Path:
        if name == PRETRAINED:
            return self.store.pretrained_dir
        if name not in self.profile.tasks:
            raise UnknownComponentError("model", name, [PRETRAINED, *self.profile.tasks], owner=f"model pool '{self.name}'")
        return self.store.expert_dir(self.seed, name)

    def load_model(self, name: str) -> nn.Module:
        """The pretrained backbone or one expert, in eval mode."""
        return self.load_backbone(self._dir(name))

    def tensors(self, name: str) -> TensorSource:
        """Memory-mapped tensors of one model (the backbone's state-dict names, floating point only)."""
        from fusionbench_core.engine.sources import open_source

        return open_source(self._dir(name) / MODEL_FILE)

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state``, in eval mode."""
        return self.backbone_from_state(state).eval()

    # -- DataModelPool

    def head(self, task: str) -> nn.Module:
        """A task's frozen head (derived from the pretrained backbone)."""
        if task not in self._heads:
            self._dir(task)
            self._heads[task] = self.builder.load_head(self.store.head_path(task))
        return self._heads[task]

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """``(inputs, labels)`` batches of a task split, in a fixed order; labels None when withheld.

        The train split is what the experts were fine-tuned on (the head's examples held out);
        the test and validation splits are capped at the profile's ``test_examples``, as the task
        pool scores them.
        """
        self._dir(task)
        if request.split not in SPLITS:
            raise ConfigError(f"data request: split must be one of {', '.join(SPLITS)}, got '{request.split}'")
        if request.split == "train":
            examples = self.builder.training_examples(self.profile, task)
        else:
            examples = self.builder.task_arrays(self.profile, task, request.split, self.profile.test_examples)
        if request.examples is not None:
            examples = examples.head(request.examples)
        for inputs, labels in self.builder.batches(examples, batch_size):
            yield inputs, (labels if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: Any) -> torch.Tensor:
        """``head_task(features(model, inputs))`` on the model's device."""
        dev = next(model.parameters()).device
        head = self.head(task).to(dev)
        self.forward_passes += 1
        return head(self.features(model, move_to(inputs, dev)))


class ExpertSuiteTaskPool:
    """Accuracy and cross-entropy of a backbone on each task's test split, with the task's frozen head.

    A subclass sets :attr:`suite`, :attr:`builder`, ``options`` and :attr:`default_batch_size`.
    The variant comes from the ``quick`` option, else from the model pool given to :meth:`bind`,
    else it is ``full``.
    """

    suite: ClassVar[str] = ""
    """The suite's name (``fb run -t NAME``)."""
    builder: SuiteBuilder
    """The suite's build: profiles, data and stores (an instance's ``builder`` argument replaces it)."""
    default_batch_size: ClassVar[int] = 128

    def __init__(self, name: str | None = None, quick: bool | None = None, max_examples: int = 0,
                 batch_size: int | None = None, split: str = "test", *, builder: SuiteBuilder | None = None):
        if builder is not None:
            self.builder = builder
        if split not in ("test", "validation"):
            raise ConfigError(f"task pool '{name or self.suite}': option 'split' must be test or validation, got '{split}'")
        self.split = split
        self.name = name or self.suite
        self.quick = quick
        self.max_examples = max_examples or None
        self.batch_size = batch_size or self.default_batch_size
        self._bound: ExpertSuiteModelPool | None = None
        self._heads: dict[Path, nn.Module] = {}

    def bind(self, modelpool: Any) -> None:
        """Score with the variant (and builder) of ``modelpool`` when it is a pool of this suite.

        The run program calls this with the run's model pool before evaluating; a ``quick``
        option given to the task pool still wins. A model pool of another suite is ignored.
        """
        if isinstance(modelpool, ExpertSuiteModelPool) and modelpool.suite == self.suite:
            self._bound = modelpool

    def variant(self) -> tuple[SuiteBuilder, Any]:
        """The builder and the profile this pool scores with (see :meth:`bind`)."""
        if self.quick is not None:
            return self.builder, self.builder.profile_for(self.quick)
        if self._bound is not None:
            return self._bound.builder, self._bound.profile
        return self.builder, self.builder.profile_for(False)

    def score(self, model: nn.Module, head: nn.Module, task: str, builder: SuiteBuilder, profile: Any,
              split: str = "test") -> dict[str, float]:
        """``{"accuracy", "loss"}`` of ``model`` with ``head`` on a task's ``split``.

        The split is capped at the profile's ``test_examples`` and at ``max_examples``.
        """
        return self.score_task(model, head, task, builder, profile, split)[0]

    def score_task(self, model: nn.Module, head: nn.Module, task: str, builder: SuiteBuilder, profile: Any,
                   split: str = "test") -> tuple[dict[str, float], Predictions]:
        """:meth:`score` and the per-example :class:`~fusionbench_core.protocols.Predictions` (see
        :meth:`.builder.SuiteBuilder.score` for their order)."""
        caps = [c for c in (profile.test_examples, self.max_examples) if c]
        examples = builder.task_arrays(profile, task, split, min(caps) if caps else None)
        return builder.score(model, head, examples, self.batch_size)

    def task_head(self, builder: SuiteBuilder, store: Any, task: str) -> nn.Module:
        """A task's frozen head, read from the store once per pool (a λ sweep scores many models with it)."""
        path = store.head_path(task)
        heads = self.__dict__.setdefault("_heads", {})  # a subclass's __init__ may not call this one's
        if path not in heads:
            heads[path] = builder.load_head(path)
        return heads[path]

    # -- TaskPool

    @property
    def task_names(self) -> list[str]:
        """The task names of the variant this pool scores with."""
        return list(self.variant()[1].tasks)

    splits: ClassVar[tuple[str, ...]] = ("test", "validation")
    """The splits :meth:`evaluate_split` scores (``fb sweep --select-on validation`` uses both)."""

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Score ``model`` on every task's scored split (``test``, or ``validation``: see the ``split`` option)."""
        return self.evaluate_split(model, self.split)

    def scored_tasks(self, profile: Any) -> list[str]:
        """The tasks :meth:`evaluate_split` scores: the profile's (one expert each); a suite may score more."""
        return list(profile.tasks)

    def evaluate_split(self, model: nn.Module, split: str) -> EvaluationReport:
        """Score ``model`` on every task's ``split`` (``test`` or ``validation``), each task with its own head.

        The report carries every task's per-example predictions (``fb sweep`` and ``fb run`` store
        them for ``fb compare``). Heads are read once per pool and the split's examples once per
        builder, so scoring many models (a λ sweep) reads the data once.
        """
        from fusionbench_core.progress import track

        if split not in self.splits:
            raise ConfigError(f"task pool '{self.name}': split must be one of {', '.join(self.splits)}, got '{split}'")
        builder, profile = self.variant()
        store = builder.store(profile)
        tasks = self.scored_tasks(profile)
        missing = [t for t in tasks if not store.head_path(t).exists()]
        if missing:
            raise ConfigError(f"task pool '{self.name}': the head of task '{missing[0]}' is not built; "
                              f"run `fb suites build {self.suite}{' --quick' if profile.name == 'quick' else ''}`")
        report = EvaluationReport()
        for task in track(tasks, f"evaluating on {self.name} ({split})"):
            report.tasks[task], report.predictions[task] = self.score_task(
                model, self.task_head(builder, store, task), task, builder, profile, split)
        return report

    def fingerprint(self) -> str:
        """A digest naming what this pool scores with: the variant's directory (settings and code version) and the split."""
        import hashlib

        builder, profile = self.variant()
        return hashlib.sha256(f"{builder.suite_dir(profile).name}/{self.split}".encode()).hexdigest()
