"""The base class of the permutation-alignment methods and their shared hyperparameters (no torch at import).

:class:`AlignmentMethod` aligns every model of the pool to a reference (``reference``, default the
first model) and averages the aligned weights (the float tensors; integer buffers come from the
reference). With ``then=<method>`` it instead hands an aligned pool (the same pool, serving the
aligned weights) to that method with its defaults, so alignment is a step before any merge. A
network with BatchNorm gets its running statistics re-estimated on the pool's training data after
the merge (``reset_bn``), as Git Re-Basin does: averaged statistics of aligned units do not
describe the averaged units.
"""

from __future__ import annotations

from typing import Any

from fusionbench_core import BaseAlgorithm, Hyperparameter
from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import Capability

REFERENCE = Hyperparameter("reference", str, "", "Model the others are aligned to (default: the pool's first model)")
THEN = Hyperparameter("then", str, "", "Merge method run on the aligned models with its defaults (default: their average)")
RESET_BN = Hyperparameter("reset_bn", bool, True, "Re-estimate BatchNorm statistics on training data after merging")
EXAMPLES = Hyperparameter("examples", int, 512, "Training inputs per model for activations and BatchNorm statistics",
                          minimum=1)
BATCH_SIZE = Hyperparameter("batch_size", int, 128, "Batch size of the forward passes", minimum=1)



class AlignmentMethod(BaseAlgorithm):
    """Base of the permutation-alignment methods: align each model to the reference, then merge.

    Subclasses implement :meth:`align`, returning the other model's state re-ordered into the
    reference's units (or, for OT fusion, transported onto them).
    """

    needs = (Capability.PERMUTATION_SPEC,)
    hyperparameters = (REFERENCE, THEN, RESET_BN, EXAMPLES, BATCH_SIZE)

    def align(self, spec: Any, modelpool: Any, ref: str, ref_model: Any,
              other: str, other_model: Any) -> dict[str, Any]:
        """The state of ``other_model`` aligned to ``ref_model``."""
        raise NotImplementedError

    def reference_of(self, modelpool: Any) -> str:
        """The reference model's name, checked."""
        names = list(modelpool.model_names)
        if len(names) < 2:
            raise ConfigError(f"method '{self.name}' needs at least 2 models, model pool '{modelpool.name}' has {len(names)}")
        ref = self.reference or names[0]
        if ref not in names:
            raise ConfigError(f"method '{self.name}': reference '{ref}' is not a model of pool '{modelpool.name}' "
                              f"({', '.join(names)})")
        return ref

    def aligned_states(self, modelpool: Any) -> dict[str, dict[str, Any]]:
        """Every model's state aligned to the reference (the reference's own state unchanged), in pool order."""
        from .common import model_state
        from .spec import spec_for

        ref = self.reference_of(modelpool)
        ref_model = modelpool.load_model(ref)
        spec = spec_for(modelpool, ref_model)
        self.cost.setdefault("aligned_models", 0)
        out = {}
        for name in modelpool.model_names:
            if name == ref:
                out[name] = model_state(ref_model)
                continue
            out[name] = self.align(spec, modelpool, ref, ref_model, name, modelpool.load_model(name))
            self.cost["aligned_models"] += 1
        return out

    def finish(self, model: Any, modelpool: Any) -> Any:
        """Re-estimate BatchNorm statistics of a merged model (when asked and it has any)."""
        from .common import has_batchnorm, reset_batchnorm

        if self.reset_bn and has_batchnorm(model):
            reset_batchnorm(model, modelpool, list(modelpool.model_names), self.examples, self.batch_size)
            self.cost["bn_reset"] = 1
        return model.eval()

    def run(self, modelpool: Any) -> Any:
        """Align, then average (or run ``then``), then re-estimate BatchNorm statistics."""
        from torch import nn

        from .common import AlignedPool, average_states, run_method

        states = self.aligned_states(modelpool)
        if self.then:
            method, fused = run_method(self.then, AlignedPool(modelpool, states), self.seed)
            self.cost.update({f"then_{k}": v for k, v in (getattr(method, "cost", {}) or {}).items()})
            return self.finish(fused, modelpool) if isinstance(fused, nn.Module) else fused
        return self.finish(modelpool.build_model(average_states(list(states.values()))), modelpool)
