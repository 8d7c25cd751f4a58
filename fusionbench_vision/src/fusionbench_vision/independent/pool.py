"""Model pools and task pools of the independent suites (``fb run -p independent-mlp`` and the others).

The models share no initialisation and no pretrained model (``has_pretrained`` is false): each is
a whole classifier (10 logits), so a task's "head" is the identity on ``mnist`` and the selection
of its five classes on a half (``mnist_0_4``, ``mnist_5_9``). The model pool is a data model pool
and declares its architecture's permutation spec (``permutation_spec()``), which alignment
methods read. A model's own data is its task's: ``batches("init0", …)`` is MNIST-5k,
``batches("mnist_0_4", …)`` the digits 0-4 (labels renumbered 0-4).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.protocols import DataRequest, EvaluationReport, Hyperparameter, task_logits
from torch import nn

from . import build as ib
from .models import model_from_state


class IndependentModelPool:
    """Independently initialised networks of one architecture (see :mod:`.build` for the settings)."""

    suite: ClassVar[str] = ""
    options = (
        Hyperparameter("seed", int, 0, "Pool seed: model i is initialised from seed 1000·seed + i.", minimum=0),
        Hyperparameter("quick", bool, False, "Use the quick variant (narrow, few epochs; as tests build it)."),
        Hyperparameter("n_models", int, 2, "Number of independently initialised models (same-task suites).",
                       minimum=2),
    )

    def __init__(self, name: str | None = None, seed: int = 0, quick: bool = False, n_models: int = 2):
        self.name = name or self.suite
        self.spec = ib.SUITES[self.suite]
        self.seed, self.quick, self.n_models = seed, quick, n_models
        self.profile = self.spec.profile(quick)
        self.members = self.spec.members(n_models)
        missing = [m for m in self.members if not (self._dir(m) / "model.safetensors").exists()]
        if missing:
            print(f"{self.suite} ({self.profile.name}, seed {seed}) is not built yet: building it now "
                  f"(once; cached under {self.spec.root(quick)})", file=sys.stderr)
            self.spec.build(quick, seed, n_models)
        self.forward_passes = 0

    @classmethod
    def build_suite(cls, quick: bool = False, seed: int = 0, force: bool = False) -> dict[str, Any]:
        """``fb suites build NAME``: train the missing models of the default pool size (2)."""
        return ib.SUITES[cls.suite].build(quick, seed, 2, force)

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """The variants' settings and fingerprints and the cache directory."""
        spec = ib.SUITES[cls.suite]
        return {"architecture": spec.architecture, "setting": spec.setting,
                "variants": {q: spec.profile(q == "quick").fingerprint() for q in ("full", "quick")},
                "cache": str(spec.root(False).parent)}

    def _dir(self, name: str) -> Path:
        if name not in self.members:
            raise UnknownComponentError("model", name, self.members, owner=f"model pool '{self.name}'")
        return self.spec.model_dir(self.quick, self.seed, name)

    def model_dir(self, name: str) -> Path:
        """Where a model lies on disk."""
        return self._dir(name)

    @property
    def model_names(self) -> list[str]:
        """``init0 … init{n-1}``, or the two halves."""
        return list(self.members)

    @property
    def tasks(self) -> list[str]:
        """The tasks the suite is scored on, ``mnist`` first."""
        return self.spec.tasks()

    @property
    def has_pretrained(self) -> bool:
        """Never: the models share no initialisation."""
        return False

    def load_model(self, name: str) -> nn.Module:
        """One model, in eval mode."""
        return ib.read_model(self._dir(name))

    def tensors(self, name: str):
        """Memory-mapped float tensors of one model."""
        from fusionbench_core.engine.sources import open_source

        return open_source(self._dir(name) / "model.safetensors")

    def build_model(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A network carrying ``state``; its widths come from the state (zipped models may be wider)."""
        return model_from_state(self.spec.architecture, state)

    def permutation_spec(self) -> dict[str, Any]:
        """The architecture's permutation spec at this variant's widths (plain data, see the alignment plugin)."""
        return self.load_model(self.model_names[0]).permutation_spec()

    def save_model(self, model: nn.Module, path: Path) -> None:
        """``config.json`` + ``model.safetensors`` in ``path`` (a temporary directory, renamed into place)."""
        ib.write_model(Path(path), model, {"saved_from": self.name})

    def _task(self, name: str) -> str:
        if name in self.members:
            return self.members[name]
        if name in self.tasks:
            return name
        raise UnknownComponentError("task", name, [*self.members, *self.tasks], owner=f"model pool '{self.name}'")

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """``(images, labels)`` of a task's (or a model's own task's) split in a fixed order; labels None if withheld."""
        task = self._task(task)
        if request.split not in ("train", "validation", "test"):
            raise ConfigError(f"data request: split must be train, validation or test, got '{request.split}'")
        limit = {"train": self.profile.train_examples, "test": self.profile.test_examples}.get(request.split)
        x, y = ib.task_data(task, request.split, limit)
        if request.examples is not None:
            x, y = x[: request.examples], y[: request.examples]
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], (y[i : i + batch_size] if request.labelled else None)

    def logits(self, task: str, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits, restricted to a half's five classes on a half's task."""
        task = self._task(task)
        self.forward_passes += 1
        params = next(iter(model.parameters()), None)
        out = model(inputs if params is None else inputs.to(params.device))
        return out[:, list(ib.HALVES[task])] if task in ib.HALVES else out


class IndependentTaskPool:
    """Accuracy and cross-entropy on the suite's tasks' test splits (``mnist``; for halves also each half)."""

    suite: ClassVar[str] = ""
    options = (
        Hyperparameter("quick", bool, None, "Score with the quick variant's test split (default: the model pool's)."),
        Hyperparameter("batch_size", int, 256, "Evaluation batch size.", minimum=1),
    )

    def __init__(self, name: str | None = None, quick: bool | None = None, batch_size: int = 256):
        self.name = name or self.suite
        self.quick = quick
        self.batch_size = batch_size
        self._bound: IndependentModelPool | None = None

    def bind(self, modelpool: Any) -> None:
        """Score with the variant of ``modelpool`` when it is a pool of this suite."""
        if isinstance(modelpool, IndependentModelPool) and modelpool.suite == self.suite:
            self._bound = modelpool

    @property
    def task_names(self) -> list[str]:
        """The suite's tasks."""
        return ib.SUITES[self.suite].tasks()

    def evaluate(self, model: Any) -> EvaluationReport:
        """Score ``model`` on every task's test split."""
        quick = self.quick if self.quick is not None else (self._bound.quick if self._bound is not None else False)
        limit = ib.SUITES[self.suite].profile(quick).test_examples
        report = EvaluationReport()
        if isinstance(model, nn.Module):
            model.eval()
        for task in self.task_names:
            x, y = ib.task_data(task, "test", limit)
            total, correct = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(x), self.batch_size):
                    xb, yb = x[i : i + self.batch_size], y[i : i + self.batch_size]

                    def logits_of(member, inputs, task=task):
                        params = next(iter(member.parameters()), None)
                        out = member(inputs if params is None else inputs.to(params.device))
                        return out[:, list(ib.HALVES[task])] if task in ib.HALVES else out

                    logits = task_logits(model, logits_of, xb).cpu().to(torch.float64)
                    total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
                    correct += int((logits.argmax(1) == yb).sum())
            report.tasks[task] = {"accuracy": correct / len(y), "loss": total / len(y)}
        return report


class MLPModelPool(IndependentModelPool):
    """Wide MLPs (3×512) from independent inits on MNIST-5k (Git Re-Basin's setting)."""

    suite = "independent-mlp"


class CNNModelPool(IndependentModelPool):
    """Small ResNets with BatchNorm from independent inits on MNIST-5k."""

    suite = "independent-cnn"


class MLPHalvesModelPool(IndependentModelPool):
    """Two wide MLPs, one on digits 0-4 and one on 5-9 (ZipIt!'s setting)."""

    suite = "independent-mlp-halves"
    options = IndependentModelPool.options[:2]


class CNNHalvesModelPool(IndependentModelPool):
    """Two small ResNets, one on digits 0-4 and one on 5-9 (ZipIt!'s setting)."""

    suite = "independent-cnn-halves"
    options = IndependentModelPool.options[:2]


class MLPTaskPool(IndependentTaskPool):
    """Scores on MNIST-5k's test split."""

    suite = "independent-mlp"


class CNNTaskPool(IndependentTaskPool):
    """Scores on MNIST-5k's test split."""

    suite = "independent-cnn"


class MLPHalvesTaskPool(IndependentTaskPool):
    """Scores on all ten digits and on each half."""

    suite = "independent-mlp-halves"


class CNNHalvesTaskPool(IndependentTaskPool):
    """Scores on all ten digits and on each half."""

    suite = "independent-cnn-halves"
