"""FusionBench core: protocols, plugin discovery, the ``fb`` CLI and the run program.

Importing this package is cheap: it never imports torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402
from .protocols import (  # noqa: E402
    PRETRAINED,
    BaseAlgorithm,
    BaseTaskPool,
    DataModelPool,
    DataRequest,
    EvaluationReport,
    FusionAlgorithm,
    Hyperparameter,
    ModelPool,
    Option,
    Predictor,
    Requirement,
    TaskPool,
    TensorInfo,
    TensorSource,
    task_logits,
)

__all__ = [
    "PRETRAINED",
    "BaseAlgorithm",
    "BaseTaskPool",
    "DataModelPool",
    "DataRequest",
    "EvaluationReport",
    "FusionAlgorithm",
    "Hyperparameter",
    "ModelPool",
    "Option",
    "Requirement",
    "TaskPool",
    "TensorInfo",
    "TensorSource",
    "__version__",
    "task_logits",
    "Predictor",
    "hookimpl",
]
