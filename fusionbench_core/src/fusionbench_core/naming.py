"""The naming contract between a model pool's tensors and the modules it loads.

Methods that pair a loaded module's parameters with the pool's tensors (RegMean's linear weights,
Fisher diagonals, AdaMerging's coefficients) need one rule that turns one name into the other:

* the names of ``pool.tensors(name)`` are those of ``pool.load_model(name).state_dict()``, or
* the pool declares how they differ with ``module_name(key)`` (:class:`RenamesTensors`): the name,
  in the module it loads, of its tensor ``key``. A pool whose checkpoints carry a prefix that its
  modules lack (CLIP checkpoints' ``vision_model.`` under transformers 5) does this.

:func:`tensor_naming` checks the contract against a loaded module and returns the mapping: every
tensor of the pool must be a parameter or buffer of the module, and every floating parameter of the
module must be one of the pool's tensors. A breach is a one-line :class:`~fusionbench_core.errors.ConfigError`
naming the pool and an example name, never a silent fallback. Torch is not imported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError


@runtime_checkable
class RenamesTensors(Protocol):
    """Optional model-pool capability: the loaded module's name of each of the pool's tensors."""

    def module_name(self, key: str) -> str:
        """The parameter or buffer name, in ``load_model``'s module, of the pool's tensor ``key``."""


class TensorNaming:
    """The checked correspondence between one pool's tensor keys and a loaded module's parameter names.

    Tied parameters (one tensor under several module names) map every one of their names to the
    single key under which the pool holds the tensor.
    """

    def __init__(self, pool: str, to_key: dict[str, str], to_module: dict[str, str], parameter_keys: list[str]):
        self.pool = pool
        self._to_key = to_key
        self._to_module = to_module
        self.parameter_keys = parameter_keys
        """The pool's keys of the module's floating parameters, once each, in the module's order."""

    def key(self, module_name: str) -> str:
        """The pool's key of the module's parameter or buffer ``module_name``."""
        try:
            return self._to_key[module_name]
        except KeyError:
            raise ConfigError(f"model pool '{self.pool}': the loaded model's '{module_name}' is none of the "
                              "pool's tensors") from None

    def module(self, key: str) -> str:
        """The loaded module's name of the pool's tensor ``key``."""
        try:
            return self._to_module[key]
        except KeyError:
            raise ConfigError(f"model pool '{self.pool}' has no tensor '{key}'") from None

    def __contains__(self, module_name: object) -> bool:
        return module_name in self._to_key


def tensor_naming(pool: Any, model: Any, keys: Iterable[str]) -> TensorNaming:
    """Check the naming contract between ``pool``'s tensor ``keys`` and ``model`` (a module the pool loaded).

    Raises a one-line :class:`ConfigError` when a key names nothing in the module, or when a floating
    parameter of the module is none of the keys.
    """
    keys = list(keys)
    pool_name = getattr(pool, "name", type(pool).__name__)
    rename = pool.module_name if isinstance(pool, RenamesTensors) else None
    named = dict(model.named_buffers(remove_duplicate=False))
    named.update(model.named_parameters(remove_duplicate=False))
    contract = ("a pool's tensor names must be its models' parameter names, or the pool must map them "
                "(module_name)")
    to_module: dict[str, str] = {}
    for key in keys:
        name = rename(key) if rename is not None else key
        if name not in named:
            example = next((n for n in named if not n.endswith("position_ids")), "nothing")
            looked = f" (looked for '{name}')" if name != key else ""
            raise ConfigError(f"model pool '{pool_name}': tensor '{key}' is no parameter or buffer of the model it "
                              f"loads{looked}, which has e.g. '{example}'; {contract}")
        to_module[key] = name
    key_of_tensor: dict[int, str] = {}
    for key, name in to_module.items():
        key_of_tensor.setdefault(id(named[name]), key)
    to_key = {name: key_of_tensor[id(tensor)] for name, tensor in named.items() if id(tensor) in key_of_tensor}
    parameter_keys = []
    for name, parameter in model.named_parameters():
        if not parameter.is_floating_point():
            continue
        if id(parameter) not in key_of_tensor:
            example = keys[0] if keys else "none"
            raise ConfigError(f"model pool '{pool_name}': parameter '{name}' of the model it loads is none of its "
                              f"tensors, which are named e.g. '{example}'; {contract}")
        parameter_keys.append(key_of_tensor[id(parameter)])
    return TensorNaming(pool_name, to_key, to_module, parameter_keys)
