"""The base class of the mixing methods: the fused model saves and loads itself, and a common cost report.

Torch-free on import, so each method module stays a light entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionbench_core import BaseAlgorithm


class MixingAlgorithm(BaseAlgorithm):
    """A method whose fused model is not of the pool's architecture (mixture layers, more layers).

    :meth:`run` sets :attr:`structure` (see :mod:`.structure`) next to the cost; ``fb run --save-model``
    then calls :meth:`save_fused` and ``fb eval DIR`` :meth:`load_fused` (the
    :class:`~fusionbench_core.protocols.SavesFusedModels` capability).
    """

    structure: dict[str, Any] | None = None

    def save_fused(self, model: Any, path: Any) -> None:
        """Write the fused model of the last :meth:`run` as ``model.safetensors`` + ``structure.json``."""
        from fusionbench_core.errors import ConfigError

        from .structure import save

        if self.structure is None:
            raise ConfigError(f"method '{self.name}' has no fused model to save (it has not run)")
        save(model, self.structure, Path(path))

    @classmethod
    def load_fused(cls, modelpool: Any, path: Any) -> Any:
        """The mixed model saved in ``path``, rebuilt on ``modelpool``'s pretrained backbone."""
        from .structure import load

        return load(modelpool, Path(path))

    def finish(self, modelpool: Any, model: Any, meter: Any, *, layers: dict[str, Any] | None = None,
               **extra: Any) -> Any:
        """Record the structure and the cost of fused ``model`` (CPU, eval mode, frozen) and return it.

        The cost holds ``parameters`` (floating values the fused model stores), ``dense_parameters`` (one
        pretrained model), their ratio, the passes counted by ``meter`` and ``extra``.
        """
        from fusionbench_core import PRETRAINED

        from .backbone import stored_parameters
        from .structure import describe

        model = model.cpu().eval().requires_grad_(False)
        self.structure = describe(self.name, model, layers=layers)
        dense = stored_parameters(modelpool.load_model(PRETRAINED))
        fused = stored_parameters(model)
        meter.extra.update({"parameters": fused, "dense_parameters": dense,
                            "parameter_ratio": round(fused / dense, 4) if dense else None, **extra})
        self.cost = meter.as_dict()
        return model
