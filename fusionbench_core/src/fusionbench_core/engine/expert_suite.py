"""Suites of saved experts with frozen per-task heads: the build store and the pool base classes.

An *expert suite* is a pretrained backbone, one linear head per task fitted on the pretrained
backbone's features and then frozen, and one backbone per task fine-tuned under its task's head.
The backbones are what gets merged; each task keeps its head. The offline mini suites
(mini-vision, mini-text) are built this way; what they share lives here, what is specific to a
modality (the backbone, its inputs, the data) stays in the suite.

The store (:class:`SuiteStore`) lays a built variant out as::

    <root>/pretrained/{config.json, model.safetensors, info.json, ...}
    <root>/heads/<task>.safetensors
    <root>/seed<N>/<task>/{config.json, model.safetensors, head.safetensors, info.json}

Every directory is written to a temporary sibling that is renamed into place when complete
(:func:`write_model_dir`), so an interrupted build leaves whole directories only, and
:func:`build_expert_suite` resumes from whatever is on disk, one expert at a time.

:class:`ExpertSuiteModelPool` and :class:`ExpertSuiteTaskPool` are the data model pool and task
pool over such a store; a suite subclasses them and fills in the hooks marked "suite hook".
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.engine.devices import resolve_device
from fusionbench_core.protocols import PRETRAINED, DataRequest, EvaluationReport, TensorSource

__all__ = [
    "CONFIG_FILE",
    "HEAD_FILE",
    "MODEL_FILE",
    "SUITE_ATTRIBUTE",
    "ExpertSuiteModelPool",
    "ExpertSuiteTaskPool",
    "SuiteBuild",
    "SuiteStore",
    "build_expert_suite",
    "checkpoint_state",
    "device",
    "evaluate_head",
    "fit_head",
    "head_state",
    "load_head",
    "move_to",
    "new_head",
    "save_head",
    "settings_fingerprint",
    "task_seed",
    "train_under_head",
    "warmup_cosine",
    "write_model_dir",
]

MODEL_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "config.json"
INFO_FILE = "info.json"
SPLITS = ("train", "validation", "test")

SUITE_ATTRIBUTE = "fusionbench_suite"
"""Attribute a pool sets on every model it hands out: ``{"quick": bool, "seed": int}`` of its variant."""


# --------------------------------------------------------------------------- small helpers


def settings_fingerprint(code_version: int, settings: Any) -> str:
    """A 10-hex-digit hash of a settings dataclass and the build code's version (names the cache directory)."""
    blob = json.dumps({"code": code_version, **dataclasses.asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return resolve_device("auto")


def task_seed(seed: int, task: str) -> int:
    """A per-(seed, task) seed, so experts do not depend on each other or on build order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}".encode()).digest()[:4], "little")


def move_to(inputs: Any, dev: torch.device) -> Any:
    """A tensor, or a mapping of tensors (tokenised text), on ``dev``."""
    if isinstance(inputs, Mapping):
        return {k: v.to(dev) for k, v in inputs.items()}
    return inputs.to(dev)


# --------------------------------------------------------------------------- tensors on disk


def checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's floating-point tensors (integer buffers such as ``position_ids`` dropped), contiguous, on CPU."""
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in model.state_dict().items()
            if tensor.is_floating_point()}


def new_head(width: int, classes: int) -> nn.Linear:
    """A zero-initialised linear head (its fit is deterministic and needs no seed)."""
    head = nn.Linear(width, classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def head_state(head: nn.Linear) -> dict[str, torch.Tensor]:
    """``{"weight", "bias"}`` of a head, contiguous, on CPU."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in head.state_dict().items()}


def load_head(path: Path) -> nn.Linear:
    """A frozen head from a ``head.safetensors`` file, in eval mode."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    classes, width = state["weight"].shape
    head = nn.Linear(width, classes)
    head.load_state_dict(state)
    head.requires_grad_(False)
    return head.eval()


def save_head(path: Path, head: nn.Linear) -> None:
    """Write a head's safetensors file through a temporary name replaced into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(head_state(head), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def write_model_dir(directory: Path, config: Any, state: Mapping[str, torch.Tensor], *,
                    head: Mapping[str, torch.Tensor] | None = None, extra: Mapping[str, Any] | None = None,
                    copy_files: Iterable[Path] = ()) -> None:
    """Write ``config.json`` + ``model.safetensors`` (+ ``head.safetensors``, ``info.json``) atomically.

    ``config`` is anything with ``to_dict()`` (a transformers config; its ``transformers_version``
    is left out, so the bytes do not depend on the installed version). ``copy_files`` that exist
    (tokenizer files, say) are copied in too. Everything goes to a temporary sibling directory
    renamed into place when complete, so an interrupted build leaves the whole directory or none.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(dict(state), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        config_dict = config.to_dict()
        config_dict.pop("transformers_version", None)
        (tmp / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
        if head is not None:
            save_file(dict(head), str(tmp / HEAD_FILE), metadata={"format": "pt"})
        if extra is not None:
            (tmp / INFO_FILE).write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")
        for source in copy_files:
            if Path(source).exists():
                shutil.copyfile(source, tmp / Path(source).name)
        tmp.chmod(0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- training and scoring


def warmup_cosine(total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over the first 10 % of ``total`` steps, then cosine to zero."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


def train_under_head(model: nn.Module, params: Iterable[nn.Parameter], n: int, step_loss: Callable[[torch.Tensor], torch.Tensor],
                     *, epochs: int, lr: float, batch: int, seed: int, description: str) -> float:
    """AdamW over ``params`` (warm-up then cosine decay), ``epochs`` passes over ``n`` examples; the last epoch's mean loss.

    ``step_loss(idx)`` returns the loss of the examples ``idx`` (a CPU index tensor, one batch of
    a fresh random order per epoch). The order comes from a generator seeded by ``seed`` alone,
    so the result does not depend on anything trained before it (what makes a resumed build
    reproduce a full one). ``model`` is in train mode during the loop and in eval mode after it.
    """
    from fusionbench_core.progress import track

    per_epoch = math.ceil(n / batch)
    total = per_epoch * epochs
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(total))
    model.train()
    epoch_loss, order = 0.0, None
    for step in track(range(total), description):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(n, generator=gen)
            epoch_loss = 0.0
        loss = step_loss(order[position * batch : (position + 1) * batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        epoch_loss += float(loss.detach()) / per_epoch
    model.eval()
    return epoch_loss


def fit_head(feats: torch.Tensor, labels: Any, classes: int, *, l2: float = 1e-3, iterations: int = 200) -> nn.Linear:
    """Multinomial logistic regression on fixed features (L-BFGS in float64 on the CPU, zero start); frozen float32 head."""
    x = feats.detach().to("cpu", torch.float64)
    y = torch.from_numpy(labels)
    head = new_head(x.shape[1], classes).double()
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


def evaluate_head(backbone: nn.Module, head: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]],
                  features: Callable[[nn.Module, Any], torch.Tensor]) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``head(features(backbone, inputs))`` over ``batches``.

    ``batches`` yields ``(inputs, labels)`` already on the backbone's device; it is consumed in
    inference mode. Scores through :func:`fusionbench_core.protocols.task_logits`, so an ensemble
    that combines its members after the head (a predictor) is scored by its own rule.
    """
    from fusionbench_core.protocols import task_logits

    dev = next(backbone.parameters()).device
    # A copy: moving the caller's head inside inference mode would turn its weights into inference
    # tensors, which a later training step (AdaMerging through the pool's logits) cannot use.
    head = copy.deepcopy(head).to(dev)
    backbone.eval()
    correct, loss_sum, n = 0, 0.0, 0
    with torch.inference_mode():
        for inputs, y in batches:
            logits = task_logits(backbone, lambda member, x: head(features(member, x)), inputs).float()
            correct += int((logits.argmax(dim=1) == y).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    return {"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)}


# --------------------------------------------------------------------------- the store and the build


@dataclass(frozen=True)
class SuiteStore:
    """The directory of one built variant of an expert suite (see the module docstring for the layout)."""

    root: Path

    @property
    def pretrained_dir(self) -> Path:
        """Directory of the pretrained backbone."""
        return self.root / "pretrained"

    def head_path(self, task: str) -> Path:
        """File of a task's head (fitted on pretrained features)."""
        return self.root / "heads" / f"{task}.safetensors"

    def expert_dir(self, seed: int, task: str) -> Path:
        """Directory of one expert."""
        return self.root / f"seed{seed}" / task

    def is_built(self, seed: int, tasks: Iterable[str]) -> bool:
        """Whether the pretrained backbone, every head and every expert of ``seed`` are on disk."""
        tasks = list(tasks)
        return ((self.pretrained_dir / MODEL_FILE).exists()
                and all(self.head_path(t).exists() for t in tasks)
                and all((self.expert_dir(seed, t) / HEAD_FILE).exists() for t in tasks))

    def clear(self, seed: int) -> None:
        """Remove the pretrained backbone, the heads and the experts of ``seed`` (other seeds stay)."""
        for path in (self.pretrained_dir, self.root / "heads", self.root / f"seed{seed}"):
            shutil.rmtree(path, ignore_errors=True)


def build_expert_suite(store: SuiteStore, *, suite: str, variant: str, tasks: Iterable[str], seed: int,
                       dev: torch.device, write_pretrained: Callable[[], str],
                       load_pretrained: Callable[[], nn.Module], fit_task_head: Callable[[nn.Module, str], nn.Linear],
                       train_expert: Callable[[nn.Module, nn.Linear, str, str], Mapping[str, Any]],
                       force: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Build (or finish building) one variant for one expert seed; returns a summary for ``fb suites build``.

    Steps, each skipped when its output is on disk: ``write_pretrained()`` (returns the summary
    line), a head per task ``fit_task_head(pretrained, task)`` saved with :func:`save_head`, and
    an expert per task ``train_expert(pretrained, head, task, label)``, which writes
    ``store.expert_dir(seed, task)`` and returns its ``info.json`` content (with
    ``validation_accuracy`` and ``pretrained_validation_accuracy``). ``force`` clears the
    pretrained backbone, the heads and this seed's experts first; ``stop_after`` stops after that
    many newly trained experts (how tests simulate an interrupted build).
    """
    import time

    from fusionbench_core.progress import track

    tasks = list(tasks)
    if force:
        store.clear(seed)
    start = time.perf_counter()
    summary: dict[str, Any] = {"suite": suite, "variant": variant, "seed": seed, "directory": str(store.root),
                               "device": str(dev)}
    summary["pretrained"] = write_pretrained() if not (store.pretrained_dir / MODEL_FILE).exists() else "cached"
    pretrained = load_pretrained()
    missing_heads = [t for t in tasks if not store.head_path(t).exists()]
    for task in track(missing_heads, f"{suite}: fitting heads on pretrained features"):
        save_head(store.head_path(task), fit_task_head(pretrained, task))
    built, results = 0, {}
    for i, task in enumerate(tasks):
        target = store.expert_dir(seed, task)
        if (target / HEAD_FILE).exists():
            info = json.loads((target / INFO_FILE).read_text())
        else:
            if stop_after is not None and built >= stop_after:
                summary["stopped"] = f"after {built} experts"
                break
            info = train_expert(pretrained, load_head(store.head_path(task)), task, f"{task} ({i + 1}/{len(tasks)})")
            built += 1
        results[task] = f"val acc {info['pretrained_validation_accuracy']:.3f} -> {info['validation_accuracy']:.3f}"
    summary["experts"] = f"{built} trained, {len(results) - built} cached"
    summary.update({f"expert {task}": text for task, text in results.items()})
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


# --------------------------------------------------------------------------- the pools


class SuiteBuild(Protocol):
    """What the pools need of a suite's build (in the mini suites, the suite's ``build`` module itself).

    Looked up on every use, so a test that swaps the module's profiles or data sees its swap.
    """

    def profile_for(self, quick: bool) -> Any:
        """The ``quick`` or ``full`` build profile (``name``, ``tasks``, ``train_examples``)."""

    def store(self, profile: Any) -> SuiteStore:
        """The store of a profile's built variant."""

    def build(self, profile: Any, seed: int = 0, *, force: bool = False) -> dict[str, Any]:
        """Build what is missing of a variant for ``seed``; returns the build summary."""


class ExpertSuiteModelPool:
    """A data model pool over a :class:`SuiteStore`: the pretrained backbone and one expert per task.

    The pool builds whatever is missing on first use, then serves models from the store; it hands
    out task batches and scores any backbone with a task's frozen head. Every model it hands out
    carries :data:`SUITE_ATTRIBUTE`, so a task pool scores it with the heads of the same variant.

    A subclass sets :attr:`suite`, :attr:`builder` and ``options`` and implements the suite hooks
    :meth:`read_config`, :meth:`load_backbone`, :meth:`backbone_from_state`, :meth:`save_model`,
    :meth:`split_batches` and :meth:`features`.
    """

    suite: str = ""
    """The suite's name (``fb run -p NAME``)."""
    builder: SuiteBuild
    """The suite's build: profiles, stores, the build itself."""

    def __init__(self, name: str | None = None, seed: int = 0, quick: bool = False):
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
        self._heads: dict[str, nn.Linear] = {}
        self.forward_passes = 0

    # -- suite hooks

    def model_dir(self, name: str) -> Path:
        """Where ``name`` (or :data:`PRETRAINED`) lies on disk in the suite's store."""
        return self._dir(name)

    def read_config(self, directory: Path) -> Any:
        """Suite hook: the backbone config saved in a model directory."""
        raise NotImplementedError

    def load_backbone(self, directory: Path) -> nn.Module:
        """Suite hook: the backbone saved in a model directory, in eval mode."""
        raise NotImplementedError

    def backbone_from_state(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """Suite hook: a backbone of ``self.config`` carrying ``state`` (strict)."""
        raise NotImplementedError

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Suite hook: save a backbone as a model directory (written to a temporary dir, renamed)."""
        raise NotImplementedError

    def split_batches(self, task: str, split: str, limit: int | None, batch_size: int) -> Iterator[tuple[Any, torch.Tensor]]:
        """Suite hook: ``(inputs, labels)`` of the first ``limit`` examples (all when None) of a split, in order."""
        raise NotImplementedError

    def features(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Suite hook: the representation of ``inputs`` a head classifies."""
        raise NotImplementedError

    # -- the fb suites command

    @classmethod
    def build_suite(cls, quick: bool = False, seed: int = 0, force: bool = False) -> dict[str, Any]:
        """``fb suites build NAME``: train what is missing (everything with ``force``)."""
        return cls.builder.build(cls.builder.profile_for(quick), seed, force=force)

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

    def _tag(self, model: nn.Module) -> nn.Module:
        setattr(model, SUITE_ATTRIBUTE, {"quick": self.quick, "seed": self.seed})
        return model

    def load_model(self, name: str) -> nn.Module:
        """The pretrained backbone or one expert, in eval mode."""
        return self._tag(self.load_backbone(self._dir(name)))

    def tensors(self, name: str) -> TensorSource:
        """Memory-mapped tensors of one model (the backbone's state-dict names, floating point only)."""
        from fusionbench_core.engine.sources import open_source

        return open_source(self._dir(name) / MODEL_FILE)

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state``, in eval mode."""
        return self._tag(self.backbone_from_state(state).eval())

    # -- DataModelPool

    def head(self, task: str) -> nn.Linear:
        """A task's frozen head (fitted on the pretrained backbone's features)."""
        if task not in self._heads:
            self._dir(task)
            self._heads[task] = load_head(self.store.head_path(task))
        return self._heads[task]

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """``(inputs, labels)`` batches of a task split, in a fixed order; labels None when withheld.

        The train split is capped at the profile's ``train_examples`` (what the experts saw).
        """
        self._dir(task)
        if request.split not in SPLITS:
            raise ConfigError(f"data request: split must be one of {', '.join(SPLITS)}, got '{request.split}'")
        limit = self.profile.train_examples if request.split == "train" else None
        if request.examples is not None:
            limit = request.examples if limit is None else min(limit, request.examples)
        for inputs, labels in self.split_batches(task, request.split, limit, batch_size):
            yield inputs, (labels if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: Any) -> torch.Tensor:
        """``head_task(features(model, inputs))`` on the model's device."""
        dev = next(model.parameters()).device
        head = self.head(task).to(dev)
        self.forward_passes += 1
        return head(self.features(model, move_to(inputs, dev)))


class ExpertSuiteTaskPool:
    """Accuracy and cross-entropy of a backbone on each task's test split, with the task's frozen head.

    A subclass sets :attr:`suite`, :attr:`builder`, ``options`` and :attr:`default_batch_size`
    and implements :meth:`score` (the suite hook). Without ``quick`` the variant comes from the
    model's :data:`SUITE_ATTRIBUTE` (full when it has none).
    """

    suite: str = ""
    """The suite's name (``fb run -t NAME``)."""
    builder: SuiteBuild
    """The suite's build: profiles and stores."""
    default_batch_size: int = 128

    def __init__(self, name: str | None = None, quick: bool | None = None, max_examples: int = 0,
                 batch_size: int | None = None):
        self.name = name or self.suite
        self.quick = quick
        self.max_examples = max_examples or None
        self.batch_size = batch_size or self.default_batch_size

    # -- suite hook

    def score(self, model: nn.Module, head: nn.Linear, task: str, profile: Any) -> dict[str, float]:
        """Suite hook: ``{"accuracy", "loss"}`` of ``model`` with ``head`` on a task's test split."""
        raise NotImplementedError

    # -- TaskPool

    @property
    def task_names(self) -> list[str]:
        """The task names of the suite."""
        return list(self.builder.profile_for(bool(self.quick)).tasks)

    def _profile(self, model: nn.Module) -> Any:
        if self.quick is not None:
            return self.builder.profile_for(self.quick)
        tag = getattr(model, SUITE_ATTRIBUTE, None)
        return self.builder.profile_for(bool(tag["quick"]) if tag else False)

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Score ``model`` on every task's test split."""
        from fusionbench_core.progress import track

        profile = self._profile(model)
        store = self.builder.store(profile)
        missing = [t for t in profile.tasks if not store.head_path(t).exists()]
        if missing:
            raise ConfigError(f"task pool '{self.name}': the head of task '{missing[0]}' is not built; "
                              f"run `fb suites build {self.suite}{' --quick' if profile.name == 'quick' else ''}`")
        report = EvaluationReport()
        for task in track(list(profile.tasks), f"evaluating on {self.name}"):
            report.tasks[task] = self.score(model, load_head(store.head_path(task)), task, profile)
        return report
