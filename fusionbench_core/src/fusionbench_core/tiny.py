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
from .protocols import PRETRAINED, DataRequest, EvaluationReport, Hyperparameter, task_logits

IN_FEATURES = 8
HIDDEN = 16


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
            tasks[name] = TinyTask(name, x[:256], y[:256], x[256:], y[256:], head)
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

    def save_model(self, model: nn.Module, path: Path) -> None:
        """Save the backbone's weights as ``model.safetensors`` in ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.rename(path / "model.safetensors")


class TinyTaskPool:
    """Task pool of the tiny suite: accuracy and cross-entropy of each task's head on a backbone."""

    options = TinyModelPool.options

    def __init__(self, name: str = "tiny", n_models: int = 3, seed: int = 0):
        self.name = name
        self.suite = build_tiny_suite(n_models, seed)

    @property
    def task_names(self) -> list[str]:
        """The task names."""
        return list(self.suite.tasks)

    def evaluate(self, model: nn.Module) -> EvaluationReport:
        """Accuracy and loss per task on the held-out split."""
        report = EvaluationReport()
        with torch.no_grad():
            for name, task in self.suite.tasks.items():
                logits = task_logits(model, lambda backbone, x, head=task.head: head(backbone(x)), task.x_test)
                report.tasks[name] = {
                    "accuracy": float((logits.argmax(dim=1) == task.y_test).double().mean()),
                    "loss": float(nn.functional.cross_entropy(logits, task.y_test)),
                }
        return report
