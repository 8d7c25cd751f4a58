"""Saving and loading mixed models: ``model.safetensors`` plus ``structure.json``, never a pickle.

``structure.json`` describes how the mixed model differs from the pool's pretrained backbone, as edits
applied in order::

    {"format": "fusionbench-mixed", "version": 1, "method": "smile",
     "layers": {"stack": "encoder.layers", "indices": [0, 1, 1, 2]},          # depth up-scaling only
     "modules": [{"name": "encoder.layers.0.mlp.fc1", "kind": "smile_linear", "config": {...}}, ...]}

Loading takes the pool's pretrained backbone, restacks its layers, puts an untrained module of each
``kind`` (:data:`.modules.KINDS`) built from its ``config`` in place, and then loads every tensor from the
safetensors file strictly, so the rebuilt model computes exactly what the saved one did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from fusionbench_core import PRETRAINED
from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import STRUCTURE_FILE

from .backbone import replace, restack
from .modules import KINDS, MixingModule

FORMAT = "fusionbench-mixed"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"


def describe(method: str, model: nn.Module, *, layers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The structure of ``model``: its mixture layers in module order (and the layer edit of depth up-scaling)."""
    modules = [{"name": name, "kind": module.kind, "config": module.config()}
               for name, module in model.named_modules() if isinstance(module, MixingModule)]
    structure: dict[str, Any] = {"format": FORMAT, "version": VERSION, "method": method}
    if layers is not None:
        structure["layers"] = layers
    structure["modules"] = modules
    return structure


def save(model: nn.Module, structure: dict[str, Any], path: Path) -> None:
    """Write ``model``'s tensors (safetensors; shared tensors once) and its structure into directory ``path``."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    (path / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2) + "\n")


def read_structure(path: Path) -> dict[str, Any]:
    """The parsed ``structure.json`` of a saved mixed model, checked for format and version."""
    file = Path(path) / STRUCTURE_FILE
    try:
        structure = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read '{file}': {exc}") from exc
    if not isinstance(structure, dict) or structure.get("format") != FORMAT or structure.get("version") != VERSION:
        raise ConfigError(f"'{file}' is not a {FORMAT} structure of version {VERSION}")
    return structure


def rebuild(modelpool: Any, structure: dict[str, Any]) -> nn.Module:
    """An untrained model of ``structure`` on the pool's pretrained backbone."""
    model = modelpool.load_model(PRETRAINED)
    if "layers" in structure:
        model = restack(model, structure["layers"]["stack"], structure["layers"]["indices"])
    for entry in structure["modules"]:
        kind = KINDS.get(entry["kind"])
        if kind is None:
            raise ConfigError(f"unknown mixture layer kind '{entry['kind']}' in the saved structure")
        replace(model, entry["name"], kind.from_config(entry["config"], model.get_submodule(entry["name"])))
    return model


def load(modelpool: Any, path: Path) -> nn.Module:
    """The mixed model saved in directory ``path``, rebuilt on ``modelpool``, in eval mode."""
    from safetensors.torch import load_model

    path = Path(path)
    model = rebuild(modelpool, read_structure(path))
    try:
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"the weights in '{path / WEIGHTS_FILE}' do not fit the saved structure: {first}") from exc
    return model.eval().requires_grad_(False)
