"""The on-disk layout of a built expert suite, and the model-directory and head files in it.

:class:`SuiteStore` lays one built variant out as::

    <root>/pretrained/{config.json, model.safetensors, info.json, ...}
    <root>/heads/<task>.safetensors
    <root>/seed<N>/<task>/{config.json, model.safetensors, head.safetensors, info.json}

Every directory is written to a temporary sibling renamed into place when complete
(:func:`write_model_dir`, through :func:`.splits.write_directory_atomic`), so an interrupted build
leaves whole directories only and a build can resume from whatever is on disk.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .splits import write_directory_atomic

__all__ = [
    "CONFIG_FILE",
    "HEAD_FILE",
    "INFO_FILE",
    "MODEL_FILE",
    "SuiteStore",
    "checkpoint_state",
    "head_state",
    "load_head",
    "save_head",
    "write_model_dir",
]

MODEL_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "config.json"
INFO_FILE = "info.json"


def checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's floating-point tensors (integer buffers such as ``position_ids`` dropped), contiguous, on CPU."""
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in model.state_dict().items()
            if tensor.is_floating_point()}


def head_state(head: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a head (its ``state_dict``), contiguous, on CPU."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in head.state_dict().items()}


def load_head(path: Path) -> nn.Module:
    """A frozen head from a ``head.safetensors`` file, in eval mode.

    A file with ``class_vectors`` holds a :class:`~.heads.CosineHead`; anything else is refused
    with a one-line error naming the file (heads of the previous suite design were linear probes,
    and a build of that design lives under another fingerprint).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fusionbench_core.errors import ModelLoadError

    from .heads import CosineHead

    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read the task head {path}: {exc}") from exc
    missing = [k for k in ("centre", "class_vectors", "scale") if k not in state]
    if missing:
        raise ModelLoadError(f"task head {path} is not a cosine head (no tensor '{missing[0]}'); rebuild the suite")
    return CosineHead.from_state(state)


def save_head(path: Path, head: nn.Module) -> None:
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
    renamed into place when complete, so readers see the whole directory or none.
    """
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
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

    write_directory_atomic(Path(directory), write)


@dataclass(frozen=True)
class SuiteStore:
    """The directory of one built variant of an expert suite (see the module docstring for the layout)."""

    root: Path

    @property
    def pretrained_dir(self) -> Path:
        """Directory of the pretrained backbone."""
        return self.root / "pretrained"

    def head_path(self, task: str) -> Path:
        """File of a task's head (derived from the pretrained backbone)."""
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

    def built_seeds(self, tasks: Iterable[str]) -> list[int]:
        """The expert seeds whose every expert (and the pretrained backbone and heads) is on disk, sorted."""
        tasks = list(tasks)
        seeds = sorted(int(p.name[4:]) for p in self.root.glob("seed*") if p.name[4:].isdigit())
        return [s for s in seeds if self.is_built(s, tasks)]

    def clear(self, seed: int) -> None:
        """Remove the pretrained backbone, the heads and the experts of ``seed`` (other seeds stay)."""
        for path in (self.pretrained_dir, self.root / "heads", self.root / f"seed{seed}"):
            shutil.rmtree(path, ignore_errors=True)
