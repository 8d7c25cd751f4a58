"""The mini-vision network: a small encoder with the Hugging Face ``CLIPVisionModel`` architecture.

Checkpoints use the key layout ``CLIPVisionModel.save_pretrained`` writes with transformers 5
(``encoder.layers.0.self_attn.q_proj.weight``...), which is also the model's in-memory naming, so
methods that pair tensors with modules (RegMean, AdaMerging) find every layer; loading also accepts
the ``vision_model.``-prefixed names of full CLIP checkpoints on the hub. Each task's classifier
is a linear head on the encoder's pooled output (``post_layernorm`` of the class token), kept in a
separate ``head.safetensors``: the backbone is what gets merged, the head stays with its task.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PREFIX = "vision_model."
MODEL_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "config.json"


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (FusionBench shows its own)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def encoder_config(*, width: int, layers: int, heads: int, mlp: int, patch: int, image_size: int = 32) -> Any:
    """A ``CLIPVisionConfig`` for 32x32 RGB inputs."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
        image_size=image_size, patch_size=patch, num_channels=3, projection_dim=width,
    )


def new_encoder(config: Any, seed: int) -> nn.Module:
    """A freshly initialised ``CLIPVisionModel``; the global RNG is restored afterwards."""
    from transformers import CLIPVisionModel

    quiet_transformers()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModel(config)


def pixel_values(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8[N, 32, 32, 3]`` images to the encoder's float input ``[N, 3, 32, 32]`` in [-1, 1]."""
    tensor = torch.as_tensor(images)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The pooled output of the encoder (the representation a head classifies)."""
    return model(pixel_values=pixels).pooler_output


def checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's floating-point tensors under its own names, contiguous, on CPU."""
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in model.state_dict().items()
            if tensor.is_floating_point()}


def load_checkpoint_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load tensors into an encoder, with or without the ``vision_model.`` prefix; strict."""
    from fusionbench_core.errors import ShapeMismatchError

    own = model.state_dict()
    mapped = {}
    for key, tensor in state.items():
        for candidate in (key, key.removeprefix(PREFIX), PREFIX + key):
            if candidate in own:
                if tuple(own[candidate].shape) != tuple(tensor.shape):
                    raise ShapeMismatchError(
                        f"tensor '{key}' has shape {list(tensor.shape)}, the mini-vision encoder expects "
                        f"{list(own[candidate].shape)}"
                    )
                mapped[candidate] = tensor
                break
        else:
            raise ShapeMismatchError(f"tensor '{key}' is not part of the mini-vision encoder")
    missing = [k for k, v in own.items() if k not in mapped and v.is_floating_point()]
    if missing:
        raise ShapeMismatchError(f"the state lacks tensor '{missing[0]}' of the mini-vision encoder")
    model.load_state_dict(mapped, strict=False)
    return model


def new_head(width: int, classes: int) -> nn.Linear:
    """A zero-initialised linear head (its fit is deterministic and needs no seed)."""
    head = nn.Linear(width, classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def head_state(head: nn.Linear) -> dict[str, torch.Tensor]:
    """``{"weight", "bias"}`` of a head, contiguous, on CPU."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in head.state_dict().items()}


def load_head(path: Path) -> nn.Linear:
    """A frozen head from a ``head.safetensors`` file."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    classes, width = state["weight"].shape
    head = nn.Linear(width, classes)
    head.load_state_dict(state)
    head.requires_grad_(False)
    return head.eval()


def write_model_dir(directory: Path, config: Any, encoder_state: Mapping[str, torch.Tensor],
                    head: Mapping[str, torch.Tensor] | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (+ ``head.safetensors``, ``info.json``) atomically.

    Everything goes to a temporary sibling directory that is renamed into place when complete, so a
    build interrupted at any point leaves either the whole directory or none of it.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(dict(encoder_state), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        config_dict = config.to_dict()
        config_dict.pop("transformers_version", None)
        (tmp / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
        if head is not None:
            save_file(dict(head), str(tmp / HEAD_FILE), metadata={"format": "pt"})
        if extra is not None:
            (tmp / "info.json").write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_config(directory: Path) -> Any:
    """The ``CLIPVisionConfig`` saved in a model directory."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_dict(json.loads((Path(directory) / CONFIG_FILE).read_text()))


def load_encoder(directory: Path) -> nn.Module:
    """A ``CLIPVisionModel`` with the weights of a model directory, in eval mode."""
    from safetensors.torch import load_file

    model = new_encoder(read_config(directory), seed=0)
    load_checkpoint_state(model, load_file(str(Path(directory) / MODEL_FILE)))
    return model.eval()
