"""Test helpers: seeded float64 MLPs with their permutation spec and a hand-built data pool that declares it.

Used by this plugin's tests; handy for a third party's alignment method too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fusionbench_core.engine.sources import StateDictSource

WIDTHS = (12, 10)
IN, OUT = 6, 4


def mlp(seed: int, widths=WIDTHS) -> nn.Sequential:
    """A seeded float64 MLP ``6 → 12 → 10 → 4`` with ReLU."""
    gen = torch.Generator().manual_seed(seed)
    dims = [IN, *widths, OUT]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
    return model.eval()


def mlp_spec(model: nn.Sequential) -> dict:
    """The MLP's permutation spec (plain data), widths read from the model."""
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    perms = {f"P{j}": [[f"{a}.weight", 0], [f"{a}.bias", 0], [f"{b}.weight", 1]]
             for j, (a, b) in enumerate(zip(linears, linears[1:]))}
    probes = {f"P{j}": [str(a + 1)] for j, a in enumerate(linears[:-1])}
    return {"architecture": "toy-mlp", "permutations": perms, "probes": probes}


def build_mlp(state) -> nn.Sequential:
    """An MLP of the state's widths carrying it."""
    linears = sorted({int(k.split(".")[0]) for k in state})
    widths = [state[f"{i}.weight"].shape[0] for i in linears[:-1]]
    model = mlp(0, widths)
    model.load_state_dict({k: v.to(torch.float64) for k, v in state.items()})
    return model.eval()


class ToyPool:
    """A DataModelPool over float64 MLPs sharing one synthetic task (labels from a fixed teacher)."""

    def __init__(self, models: dict[str, nn.Module], n: int = 256, seed: int = 0):
        self.name = "toy"
        self.models = models
        gen = torch.Generator().manual_seed(seed + 99)
        x = torch.randn(2 * n, IN, generator=gen, dtype=torch.float64)
        y = (x @ torch.randn(IN, OUT, generator=gen, dtype=torch.float64)).argmax(1)
        self.data = {"train": (x[:n], y[:n]), "test": (x[n:], y[n:])}

    @property
    def model_names(self):
        return list(self.models)

    @property
    def has_pretrained(self):
        return False

    def load_model(self, name):
        return copy.deepcopy(self.models[name])

    def tensors(self, name):
        return StateDictSource(self.models[name].state_dict())

    def build_model(self, state):
        return build_mlp(state)

    def permutation_spec(self):
        return mlp_spec(next(iter(self.models.values())))

    def batches(self, task, request, *, batch_size=32):
        x, y = self.data["test" if request.split == "test" else "train"]
        if request.examples is not None:
            x, y = x[: request.examples], y[: request.examples]
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], (y[start:start + batch_size] if request.labelled else None)

    def logits(self, task, model, inputs):
        return model(inputs)


def trained_mlp(seed: int, pool: ToyPool, steps: int = 300, widths=WIDTHS) -> nn.Sequential:
    """An MLP from seed ``seed`` trained with Adam on ``pool``'s training data (full batch)."""
    model = mlp(seed, widths).train()
    x, y = pool.data["train"]
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval().requires_grad_(False)
