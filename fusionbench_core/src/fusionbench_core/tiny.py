"""The tiny suite: an in-memory model pool and task pool for tests and quick checks (needs torch).

The tiny suite is real in miniature: a pretrained MLP backbone and one model per task fine-tuned
from it on a synthetic classification task, each task with its own frozen linear head, so merged
backbones can be scored on every task exactly as the CLIP and GPT-2 suites score theirs. Everything
is built in memory from a seed in well under a second.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engine.sources import StateDictSource
from .errors import ConfigError
from .protocols import PRETRAINED, DataRequest, EvaluationReport, Hyperparameter, Option, Predictions, task_logits

IN_FEATURES = 8
HIDDEN = 16
VALIDATION_EXAMPLES = 64
"""Examples per task in the validation split (drawn from their own generator, so train and test stay as they were)."""


def make_backbone(seed: int) -> nn.Module:
    """The tiny backbone: two linear layers with a LayerNorm, seeded."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Tanh()
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.5 if param.dim() > 1 else 0.1))
        model[2].weight.fill_(1.0)
    return model.double()


@dataclass
class TinyTask:
    """One synthetic task: data, labels and its frozen head."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    head: nn.Linear
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of the ``"validation"`` or ``"test"`` split."""
        return (self.x_val, self.y_val) if split == "validation" else (self.x_test, self.y_test)


@dataclass
class TinySuite:
    """A pretrained backbone, one fine-tuned backbone per task and the tasks themselves."""

    pretrained: nn.Module
    finetuned: dict[str, nn.Module]
    tasks: dict[str, TinyTask]


@lru_cache(maxsize=16)
def build_tiny_suite(n_models: int = 3, seed: int = 0, steps: int = 60, classes: int = 3) -> TinySuite:
    """Build the tiny suite deterministically (cached per arguments)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pretrained = make_backbone(seed)
        tasks: dict[str, TinyTask] = {}
        finetuned: dict[str, nn.Module] = {}
        gen = torch.Generator().manual_seed(seed + 1)
        for i in range(n_models):
            name = f"task{i}"
            teacher = torch.randn(IN_FEATURES, classes, generator=gen, dtype=torch.float64)
            x = torch.randn(320, IN_FEATURES, generator=gen, dtype=torch.float64)
            y = (x @ teacher).argmax(dim=1)
            head = nn.Linear(HIDDEN, classes).double()
            with torch.no_grad():
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen, dtype=torch.float64) * 0.5)
                head.bias.zero_()
            head.requires_grad_(False)
            model = copy.deepcopy(pretrained)
            optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
            for _ in range(steps):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(head(model(x[:256])), y[:256])
                loss.backward()
                optimiser.step()
            model.requires_grad_(False)
            val_gen = torch.Generator().manual_seed(seed * 1000 + 7919 + i)
            x_val = torch.randn(VALIDATION_EXAMPLES, IN_FEATURES, generator=val_gen, dtype=torch.float64)
            y_val = (x_val @ teacher).argmax(dim=1)
            tasks[name] = TinyTask(name, x[:256], y[:256], x[256:], y[256:], head, x_val, y_val)
            finetuned[name] = model
    pretrained.requires_grad_(False)
    return TinySuite(pretrained, finetuned, tasks)


class TinyModelPool:
    """Model pool of the tiny suite: ``_pretrained_`` plus ``task0 … task{n-1}``."""

    options = (
        Hyperparameter("n_models", int, 3, "Number of fine-tuned models (tasks)."),
        Hyperparameter("seed", int, 0, "Seed of the suite (backbone, data, fine-tuning)."),
    )

    def __init__(self, name: str = "tiny", n_models: int = 3, seed: int = 0):
        self.name = name
        self.suite = build_tiny_suite(n_models, seed)
        self.forward_passes = 0

    @property
    def model_names(self) -> list[str]:
        """The task names."""
        return list(self.suite.finetuned)

    @property
    def has_pretrained(self) -> bool:
        """Always true."""
        return True

    def load_model(self, name: str) -> nn.Module:
        """A private copy of a model."""
        if name == PRETRAINED:
            return copy.deepcopy(self.suite.pretrained)
        return copy.deepcopy(self.suite.finetuned[name])

    def tensors(self, name: str) -> StateDictSource:
        """Lazy access to one model's state dict."""
        model = self.suite.pretrained if name == PRETRAINED else self.suite.finetuned[name]
        return StateDictSource(model.state_dict())

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone carrying ``state``."""
        model = copy.deepcopy(self.suite.pretrained)
        model.load_state_dict(dict(state), strict=True)
        return model

    def architecture(self):
        """An :class:`~fusionbench_core.protocols.ArchitectureSpec`: the backbone is its own layer stack (a
        ``Sequential``) and its two ``Linear`` layers are the MLPs."""
        from .protocols import ArchitectureSpec

        return ArchitectureSpec(layers="", mlps=("0", "3"), linear_types=("Linear",))

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """Batches of a task's train (or test) split; labels withheld when ``request.labelled`` is false."""
        data = self.suite.tasks[task]
        x, y = (data.x_train, data.y_train) if request.split in ("train", "validation") else (data.x_test, data.y_test)
        if request.examples is not None:
            x, y = x[: request.examples], y[: request.examples]
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], (y[start : start + batch_size] if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``head_task(model(inputs))``."""
        self.forward_passes += 1
        return self.suite.tasks[task].head(model(inputs))

    def fingerprint(self) -> str:
        """SHA-256 of the suite's weights, data and heads."""
        return suite_fingerprint(self.suite)

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save the backbone's weights as ``model.safetensors`` in ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.rename(path / "model.safetensors")


def _digest_tensors(tensors: Any) -> str:
    import hashlib

    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def suite_fingerprint(suite: TinySuite) -> str:
    """SHA-256 over every weight, input, label and head of the suite (the pools' ``fingerprint()``)."""
    tensors = [t for t in suite.pretrained.state_dict().values()]
    for model in suite.finetuned.values():
        tensors += list(model.state_dict().values())
    for task in suite.tasks.values():
        tensors += [task.x_train, task.y_train, task.x_test, task.y_test, task.x_val, task.y_val,
                    task.head.weight, task.head.bias]
    return _digest_tensors(tensors)


class TinyTaskPool:
    """Task pool of the tiny suite: accuracy and cross-entropy of each task's head on a backbone.

    The ``split`` option chooses what :meth:`evaluate` scores: ``test`` (64 examples per task, the
    default) or ``validation`` (64 other examples per task, for choosing hyperparameters). Either
    way the report carries per-example :class:`~fusionbench_core.protocols.Predictions`.
    """

    options = TinyModelPool.options + (
        Option("split", str, "test", "Split that evaluate() scores.", choices=("validation", "test")),
    )
    splits = ("validation", "test")

    def __init__(self, name: str = "tiny", n_models: int = 3, seed: int = 0, split: str = "test"):
        if split not in self.splits:
            raise ConfigError(f"task pool '{name}': split must be one of {', '.join(self.splits)}, got '{split}'")
        self.name = name
        self.split = split
        self.suite = build_tiny_suite(n_models, seed)

    def fingerprint(self) -> str:
        """SHA-256 of the suite's weights, data and heads."""
        return suite_fingerprint(self.suite)

    @property
    def task_names(self) -> list[str]:
        """The task names."""
        return list(self.suite.tasks)

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Accuracy and loss per task on the pool's split (``test`` unless the ``split`` option says otherwise)."""
        return self.evaluate_split(model, self.split)

    def evaluate_split(self, model: nn.Module, split: str) -> EvaluationReport:
        """Accuracy and loss per task on ``split`` (``validation`` or ``test``), with per-example predictions."""
        if split not in self.splits:
            raise ConfigError(f"task pool '{self.name}': split must be one of {', '.join(self.splits)}, got '{split}'")
        report = EvaluationReport()
        with torch.no_grad():
            for name, task in self.suite.tasks.items():
                x, y = task.split(split)
                logits = task_logits(model, lambda backbone, x, head=task.head: head(backbone(x)), x)
                predicted = logits.argmax(dim=1)
                report.tasks[name] = {
                    "accuracy": float((predicted == y).double().mean()),
                    "loss": float(nn.functional.cross_entropy(logits, y)),
                }
                report.predictions[name] = Predictions(tuple(predicted.tolist()), tuple(y.tolist()))
        return report
