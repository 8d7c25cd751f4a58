"""The permutation spec of the mini-vision transformer (a Hugging Face ``CLIPVisionModel``-architecture encoder).

Declared with the architecture, as plain data; alignment methods read it without naming the model
family. Per layer ``i``: ``H{i}`` permutes the attention heads as whole blocks of ``head_dim``
(the rows of q, k and v and the columns of the output projection), ``M{i}`` the MLP's hidden
units; ``R`` is the residual stream, shared by the embeddings, every pre-norm, every residual write
and the final norm, so the encoder's output comes out in the permuted basis (a frozen head on top
reads it through the same permutation). No probes: activation methods need module outputs with
units on dim 1, and these are ``[batch, tokens, width]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def clip_vision_permutation_spec(config: Any, keys: Iterable[str] = ()) -> dict[str, Any]:
    """The spec for a ``CLIPVisionConfig`` (``hidden_size``, ``num_attention_heads``, ``num_hidden_layers``).

    ``keys`` (a state dict's names) decides whether tensors carry the ``vision_model.`` prefix.
    """
    head_dim = config.hidden_size // config.num_attention_heads
    p = "vision_model." if any(str(k).startswith("vision_model.") for k in keys) else ""
    residual = [[f"{p}embeddings.class_embedding", 0], [f"{p}embeddings.patch_embedding.weight", 0],
                [f"{p}embeddings.position_embedding.weight", 1], [f"{p}pre_layrnorm.weight", 0],
                [f"{p}pre_layrnorm.bias", 0], [f"{p}post_layernorm.weight", 0], [f"{p}post_layernorm.bias", 0]]
    perms: dict[str, list[list]] = {"R": residual}
    for i in range(config.num_hidden_layers):
        layer = f"{p}encoder.layers.{i}."
        for norm in ("layer_norm1", "layer_norm2"):
            residual += [[f"{layer}{norm}.weight", 0], [f"{layer}{norm}.bias", 0]]
        residual += [[f"{layer}self_attn.{x}_proj.weight", 1] for x in ("q", "k", "v")]
        residual += [[f"{layer}self_attn.out_proj.weight", 0], [f"{layer}self_attn.out_proj.bias", 0],
                     [f"{layer}mlp.fc1.weight", 1], [f"{layer}mlp.fc2.weight", 0], [f"{layer}mlp.fc2.bias", 0]]
        heads = []
        for x in ("q", "k", "v"):
            heads += [[f"{layer}self_attn.{x}_proj.weight", 0, head_dim], [f"{layer}self_attn.{x}_proj.bias", 0, head_dim]]
        heads.append([f"{layer}self_attn.out_proj.weight", 1, head_dim])
        perms[f"H{i}"] = heads
        perms[f"M{i}"] = [[f"{layer}mlp.fc1.weight", 0], [f"{layer}mlp.fc1.bias", 0], [f"{layer}mlp.fc2.weight", 1]]
    return {"architecture": getattr(config, "model_type", "clip_vision_model"), "permutations": perms, "probes": {}}
