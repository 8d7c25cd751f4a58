"""Hyperparameters shared by several data-free methods, declared once with their choices and ranges.

Not a method. Torch-free, so declaring a method's hyperparameters (and listing them with
``fb methods show``) imports nothing heavy. Ranges are checked by :meth:`Hyperparameter.parse`
when a method is constructed, so ``fb run --dry-run`` rejects out-of-range values.
"""

from __future__ import annotations

from fusionbench_core import Hyperparameter

MERGE_FUNCS = ("sum", "mean")
SIGN_METHODS = ("total", "frequency")
ZERO_SIGNS = ("model", "tensor", "plus")
RESCALES = ("inverse", "l1", "none")


def scaling_factor(default: float, help: str) -> Hyperparameter:
    """λ (or α): any real number (a negative one negates the task vectors)."""
    return Hyperparameter("scaling_factor", float, default, help)


def density(default: float, help: str) -> Hyperparameter:
    """d, a fraction of entries kept: (0, 1]."""
    return Hyperparameter("density", float, default, help, minimum=0.0, maximum=1.0, minimum_exclusive=True)


DROP_RATE = Hyperparameter("drop_rate", float, 0.5, "p, the probability of dropping each entry",
                           minimum=0.0, maximum=1.0, maximum_exclusive=True)
RESCALE = Hyperparameter("rescale", str, "inverse", "Survivor rescaling: 1/(1-p) (paper), l1 (mergekit), none",
                         choices=RESCALES)


def merge_func(help: str = "Disjoint sum or disjoint mean") -> Hyperparameter:
    """The TIES disjoint merge: ``sum`` or ``mean`` over the entries that agree with the elected sign."""
    return Hyperparameter("merge_func", str, "sum", help, choices=MERGE_FUNCS)


SIGN_METHOD = Hyperparameter("sign_method", str, "total",
                             "Elect by total mass (paper) or by count of models (frequency)", choices=SIGN_METHODS)
ZERO_SIGN = Hyperparameter(
    "zero_sign", str, "model",
    "Sign of a tied election: whole-model majority (paper), tensor majority (git-theta) or plus (PEFT, mergekit)",
    choices=ZERO_SIGNS)
