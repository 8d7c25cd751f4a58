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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fusionbench_core.suitekit.store import (  # noqa: F401  (the suite's model API, re-exported)
    CONFIG_FILE,
    HEAD_FILE,
    MODEL_FILE,
    checkpoint_state,
    head_state,
    load_head,
    write_model_dir,
)
from torch import nn

PREFIX = "vision_model."


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
