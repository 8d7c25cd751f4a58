"""Fixed task heads of CLIP's form: a fixed scale times a cosine, derived from the pretrained backbone.

A CLIP zero-shot head scores an image by ``100 * cos(image embedding, class text embedding)``:
no bias, no training on the task, and a backbone cannot buy confidence by inflating its
features, because both sides are normalised. The offline suites use the same form,
:class:`CosineHead`::

    logits = scale * normalise(normalise(f) - centre) @ class_vectors.T     (rows of class_vectors unit-norm)

``class_vectors`` and ``centre`` come from the *pretrained* backbone's features of a small set of
examples that no expert trains on and no evaluation scores (:func:`cosine_head`): a few labelled
images per class for mini-vision (few-shot class prototypes) and several descriptions per class
for mini-text (zero-shot, as CLIP's prompt templates). The centring is SimpleShot's "CL2N"
(Wang et al., 2019): the backbone's features share a large common component, so raw cosines
between classes are all close to 1 and the classes are barely apart; subtracting the mean of the
class means and normalising fixes that. The centre is part of the frozen head, fixed once from the
pretrained model, so a merged backbone is scored against exactly the same reference as every
expert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["CosineHead", "cosine_head"]


class CosineHead(nn.Module):
    """``scale * cos(f/|f| - centre, class_vector)`` per class: a frozen head with no bias and no trainable parameter.

    The features are normalised before the centre is subtracted, so scaling a feature vector
    changes nothing. ``class_vectors`` are taken as given (unit rows, as :func:`cosine_head` makes
    them), so a head read back from its file is bit-identical to the one written.
    """

    def __init__(self, centre: torch.Tensor, class_vectors: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("centre", centre.detach().clone().float())
        self.register_buffer("class_vectors", class_vectors.detach().clone().float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    @property
    def classes(self) -> int:
        """The number of classes."""
        return int(self.class_vectors.shape[0])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes]`` of features ``[N, width]``."""
        unit = nn.functional.normalize(features.float(), dim=-1)
        centred = nn.functional.normalize(unit - self.centre, dim=-1)
        return self.scale * centred @ self.class_vectors.T

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> CosineHead:
        """The head saved as ``{"centre", "class_vectors", "scale"}`` (its ``state_dict``), frozen, in eval mode."""
        head = cls(state["centre"], state["class_vectors"], float(state["scale"]))
        head.requires_grad_(False)
        return head.eval()


def cosine_head(features: torch.Tensor, labels: Any, classes: int, scale: float) -> CosineHead:
    """The cosine head whose class vectors are the centred class means of ``features`` (CL2N prototypes).

    Each feature is first normalised (cosine geometry, as for sentence embeddings); the centre is
    the mean of the per-class means, so every class weighs the same however many examples it has;
    a class vector is the mean of its examples' centred, normalised features. Every class needs at
    least one example.
    """
    from fusionbench_core.errors import ConfigError

    x = nn.functional.normalize(features.detach().to("cpu", torch.float64), dim=1)
    y = torch.as_tensor(labels, dtype=torch.long).cpu()
    counts = torch.bincount(y, minlength=classes)
    if len(counts) > classes or bool((counts == 0).any()):
        missing = [c for c in range(classes) if c >= len(counts) or counts[c] == 0]
        raise ConfigError(f"a cosine head needs an example of every class; class {missing[0]} of {classes} has none")
    means = torch.zeros(classes, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / counts[:, None]
    centre = means.mean(0)
    centred = nn.functional.normalize(x - centre, dim=1)
    vectors = torch.zeros_like(means).index_add_(0, y, centred) / counts[:, None]
    head = CosineHead(centre.float(), nn.functional.normalize(vectors, dim=1).float(), scale)
    head.requires_grad_(False)
    return head.eval()
