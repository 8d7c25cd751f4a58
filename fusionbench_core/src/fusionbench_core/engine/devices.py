"""Choosing the torch device a pool, task pool or method runs on."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def resolve_device(name: str = "auto", *, setting: str = "option 'device'") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else must name an available torch device.

    ``setting`` names the option or hyperparameter in the one-line error, e.g. ``"hyperparameter 'device'"``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{setting}: '{name}' is not a torch device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} is '{name}', but no CUDA device is available")
    return device
