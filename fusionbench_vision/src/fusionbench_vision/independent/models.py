"""The two architectures of the independent suites, their permutation specs and how they are built from a state.

Both read a 1×32×32 grey image and return 10 class logits (the whole network is the model: there
is no separate head). Widths are read from a state's shapes, so a zipped or partially zipped
model of other widths builds too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

INPUT = 32 * 32
CLASSES = 10


class WideMLP(nn.Module):
    """``1024 → w → … → w → 10`` with ReLU (Git Re-Basin's MNIST MLP has three hidden layers of 512)."""

    architecture = "wide-mlp"

    def __init__(self, widths: list[int]):
        super().__init__()
        dims = [INPUT, *widths, CLASSES]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.widths = list(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``[B, 1, 32, 32]`` (or flat ``[B, 1024]``)."""
        return self.layers(x.reshape(x.shape[0], -1))

    def config(self) -> dict[str, Any]:
        """What rebuilds this network."""
        return {"architecture": self.architecture, "widths": self.widths}

    def permutation_spec(self) -> dict[str, Any]:
        """One permutation per hidden layer: its weight's rows, its bias, the next weight's columns."""
        perms, probes = {}, {}
        for i in range(len(self.widths)):
            lin, nxt = 2 * i, 2 * i + 2
            perms[f"P{i}"] = [[f"layers.{lin}.weight", 0], [f"layers.{lin}.bias", 0], [f"layers.{nxt}.weight", 1]]
            probes[f"P{i}"] = [f"layers.{lin + 1}"]
        return {"architecture": self.architecture, "permutations": perms, "probes": probes}

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> WideMLP:
        """An MLP with the widths of ``state`` (not loaded)."""
        count = sum(1 for k in state if k.endswith(".weight"))
        return cls([int(state[f"layers.{2 * i}.weight"].shape[0]) for i in range(count - 1)])


class Block(nn.Module):
    """A basic residual block: conv-BN-ReLU-conv-BN, plus the input (or a 1×1 conv-BN shortcut), then ReLU."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_mid, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``."""
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (x if self.shortcut is None else self.shortcut(x)))


class SmallResNet(nn.Module):
    """Stem conv-BN-ReLU, three residual blocks (the last two halve the resolution), global pool, linear.

    ``channels`` = ``[stem/R1, B1, B2, R2, B3, R3]``: R* the residual stream of each stage, B* each
    block's interior (six permutations, as in Git Re-Basin's ResNet spec).
    """

    architecture = "small-resnet"

    def __init__(self, channels: list[int]):
        super().__init__()
        r1, b1, b2, r2, b3, r3 = channels
        self.stem = nn.Sequential(nn.Conv2d(1, r1, 3, 1, 1, bias=False), nn.BatchNorm2d(r1), nn.ReLU())
        self.block1 = Block(r1, b1, r1, 1)
        self.block2 = Block(r1, b2, r2, 2)
        self.block3 = Block(r2, b3, r3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(r3, CLASSES)
        self.channels = list(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``[B, 1, 32, 32]``."""
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))

    def config(self) -> dict[str, Any]:
        """What rebuilds this network."""
        return {"architecture": self.architecture, "channels": self.channels}

    def permutation_spec(self) -> dict[str, Any]:
        """Residual streams share one permutation per stage; block interiors one each; BatchNorm follows its channels."""
        def bn(prefix: str) -> list[list]:
            return [[f"{prefix}.{p}", 0] for p in ("weight", "bias", "running_mean", "running_var")]

        perms = {
            "R1": [["stem.0.weight", 0], *bn("stem.1"), ["block1.conv1.weight", 1], ["block1.conv2.weight", 0],
                   *bn("block1.bn2"), ["block2.conv1.weight", 1], ["block2.shortcut.0.weight", 1]],
            "B1": [["block1.conv1.weight", 0], *bn("block1.bn1"), ["block1.conv2.weight", 1]],
            "B2": [["block2.conv1.weight", 0], *bn("block2.bn1"), ["block2.conv2.weight", 1]],
            "R2": [["block2.conv2.weight", 0], *bn("block2.bn2"), ["block2.shortcut.0.weight", 0],
                   *bn("block2.shortcut.1"), ["block3.conv1.weight", 1], ["block3.shortcut.0.weight", 1]],
            "B3": [["block3.conv1.weight", 0], *bn("block3.bn1"), ["block3.conv2.weight", 1]],
            "R3": [["block3.conv2.weight", 0], *bn("block3.bn2"), ["block3.shortcut.0.weight", 0],
                   *bn("block3.shortcut.1"), ["fc.weight", 1]],
        }
        probes = {"R1": ["stem.2", "block1.relu2"], "B1": ["block1.relu1"], "B2": ["block2.relu1"],
                  "R2": ["block2.relu2"], "B3": ["block3.relu1"], "R3": ["block3.relu2"]}
        return {"architecture": self.architecture, "permutations": perms, "probes": probes}

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> SmallResNet:
        """A network with the channels of ``state`` (not loaded)."""
        keys = ["stem.0.weight", "block1.conv1.weight", "block2.conv1.weight", "block2.conv2.weight",
                "block3.conv1.weight", "block3.conv2.weight"]
        return cls([int(state[k].shape[0]) for k in keys])


ARCHITECTURES = {WideMLP.architecture: WideMLP, SmallResNet.architecture: SmallResNet}


def new_model(config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised network of a config (``architecture`` plus ``widths`` or ``channels``)."""
    arch = config["architecture"]
    if arch == WideMLP.architecture:
        return WideMLP(list(config["widths"]))
    return SmallResNet(list(config["channels"]))


def model_from_state(architecture: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A network of ``architecture`` carrying ``state`` (its widths from the state), in eval mode.

    Integer buffers (BatchNorm's ``num_batches_tracked``) may be missing; every other tensor must match.
    """
    model = ARCHITECTURES[architecture].from_state(state)
    missing, unexpected = model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                                                 for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"{architecture} state: missing {missing[:3]}, unexpected {list(unexpected)[:3]}")
    return model.eval()
