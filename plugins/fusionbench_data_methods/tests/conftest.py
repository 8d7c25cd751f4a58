"""Fixtures of the data-methods tests: a private statistics cache, a hand-built pool and a predictor task pool."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fusionbench_core.engine.sources import StateDictSource

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty statistics cache."""
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class HandPool:
    """A minimal DataModelPool over hand-built modules: identity head, fixed inputs and labels per task."""

    def __init__(self, models: dict[str, nn.Module], data: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 pretrained: nn.Module | None = None):
        self.name = "hand"
        self.models = models
        self.data = data
        self.pretrained = pretrained
        self.forward_passes = 0

    @property
    def model_names(self):
        return list(self.models)

    @property
    def has_pretrained(self):
        return self.pretrained is not None

    def load_model(self, name):
        return copy.deepcopy(self.pretrained if name == "_pretrained_" else self.models[name])

    def tensors(self, name):
        return StateDictSource((self.pretrained if name == "_pretrained_" else self.models[name]).state_dict())

    def build_model(self, state):
        model = copy.deepcopy(next(iter(self.models.values())))
        model.load_state_dict(dict(state))
        return model

    def batches(self, task, request, *, batch_size=32):
        x, y = self.data[task]
        if request.examples is not None:
            x, y = x[: request.examples], y[: request.examples]
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], (y[start:start + batch_size] if request.labelled else None)

    def logits(self, task, model, inputs):
        self.forward_passes += 1
        return model(inputs)


@pytest.fixture
def hand_pool():
    """``hand_pool(models, data, pretrained=None)`` builds a :class:`HandPool`."""
    return HandPool


@pytest.fixture
def predictor_taskpool():
    """The task pool name to score predictors with: core's tiny pool scores through ``task_logits``."""
    return "tiny"
