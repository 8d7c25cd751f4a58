"""Loading CLIP checkpoints by hub id or local directory, with one-line errors that say what to do.

Every id goes through :func:`fusionbench_core.hub.resolve_model`, so ``FUSIONBENCH_MODEL_ROOT`` maps
hub ids to local directories for offline and air-gapped use. Tensor names follow the checkpoint
files (``vision_model.encoder.layers.0...``), whatever the in-memory naming of the transformers
version at hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from fusionbench_core.engine.sources import RenamedSource, StateDictSource, open_source
from fusionbench_core.errors import ModelLoadError, ShapeMismatchError
from fusionbench_core.hub import MODEL_ROOT_ENV, resolve_model
from fusionbench_core.protocols import TensorSource

VISION_PREFIX = "vision_model."
CLIP_TYPES = ("clip", "clip_vision_model")


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and load reports (FusionBench shows its own)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _hint(identifier: str) -> str:
    return f"put a copy at <{MODEL_ROOT_ENV}>/{identifier} (now: {os.environ.get(MODEL_ROOT_ENV) or 'unset'}) or allow hub access"


def resolve(identifier: str) -> str:
    """A local directory for ``identifier`` (a hub id or a path), else the hub id itself."""
    return resolve_model(identifier)


def model_type(path: str, identifier: str) -> str | None:
    """The ``model_type`` of a local checkpoint directory (None for hub ids and adapter directories)."""
    directory = Path(path)
    if not directory.is_dir():
        return None
    config = directory / "config.json"
    if not config.exists():
        if (directory / "adapter_config.json").exists():
            return None
        raise ModelLoadError(f"model '{identifier}' at '{directory}' has no config.json: save it with save_pretrained")
    try:
        return json.loads(config.read_text()).get("model_type")
    except ValueError as exc:
        raise ModelLoadError(f"model '{identifier}': '{config}' is not valid JSON ({exc})") from exc


def check_clip(path: str, identifier: str, allowed: tuple[str, ...] = CLIP_TYPES) -> None:
    """Raise a one-line error when a local checkpoint is not a CLIP model of an allowed type."""
    kind = model_type(path, identifier)
    if kind is not None and kind not in allowed:
        raise ModelLoadError(
            f"model '{identifier}' at '{path}' is a '{kind}' model, not {' or '.join(allowed)}: "
            "point the suite at a CLIP checkpoint (see `fb modelpools show NAME` for the ids it expects)"
        )


def from_pretrained(cls: Any, identifier: str, path: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path)`` with failures turned into one-line :class:`ModelLoadError`."""
    quiet_transformers()
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load {cls.__name__} '{identifier}' from '{path}': {first}; {_hint(identifier)}") from exc


def checkpoint_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vision tower's state dict under checkpoint names (``vision_model.`` prefix), integer buffers dropped."""
    out = {}
    for key, tensor in state.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith(VISION_PREFIX) else VISION_PREFIX + key] = tensor
    return out


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load checkpoint-named ``state`` into a vision tower, whatever its in-memory key naming."""
    own = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for candidate in (key, key.removeprefix(VISION_PREFIX), VISION_PREFIX + key):
            if candidate in own:
                if tuple(own[candidate].shape) != tuple(tensor.shape):
                    raise ShapeMismatchError(
                        f"tensor '{key}' has shape {list(tensor.shape)} but the model expects {list(own[candidate].shape)}"
                    )
                mapped[candidate] = tensor
                break
        else:
            raise ShapeMismatchError(f"tensor '{key}' is not part of the CLIP vision tower")
    missing = [key for key in own if key not in mapped and not key.endswith("position_ids")]
    if missing:
        raise ShapeMismatchError(f"the fused state lacks tensor '{missing[0]}' of the CLIP vision tower")
    module.load_state_dict(mapped, strict=False)
    return module


class VisionTowerSource(RenamedSource):
    """The vision tower's tensors of a checkpoint file, named ``vision_model.*`` whatever the file says.

    Full CLIP checkpoints and most vision-only ones store ``vision_model.*``; vision-only models saved
    by some transformers versions store the tower's own names (``embeddings.*``, ``encoder.*``). Keys
    come in file order; row reads and the file's zero-copy fast paths are forwarded
    (:class:`~fusionbench_core.engine.sources.RenamedSource`), so each tensor is read once.
    """

    def __init__(self, inner: TensorSource, identifier: str):
        names = [k for k in inner.keys() if not k.endswith("position_ids")]
        prefixed = [k for k in names if k.startswith(VISION_PREFIX)]
        if prefixed:
            mapping = {k: k for k in prefixed}
        elif names and all(k.split(".", 1)[0] in _TOWER_PARTS for k in names):
            mapping = {VISION_PREFIX + k: k for k in names}
        else:
            raise ModelLoadError(
                f"model '{identifier}' has no '{VISION_PREFIX}*' tensors: it is not a CLIP (vision) checkpoint"
            )
        super().__init__(inner, mapping)


_TOWER_PARTS = {"embeddings", "pre_layrnorm", "encoder", "post_layernorm"}


def vision_source(identifier: str, path: str, load: Any) -> TensorSource:
    """Lazy tensors of a vision tower: memory-mapped when ``path`` is a local directory, else ``load()``'s state."""
    if Path(path).is_dir():
        return VisionTowerSource(open_source(path), identifier)
    return StateDictSource(checkpoint_keys(load().state_dict()))
