"""PEFT LoRA adapters as merge inputs: base weights + ΔW, computed tensor by tensor.

``LoraSource(base, adapter_dir)`` is a :class:`~fusionbench_core.protocols.TensorSource` that looks
exactly like the fine-tuned model ``merge_and_unload()`` would produce, without ever building it: a
tensor with an adapter is read from ``base`` and ΔW = scale·B·A is added to it when (and only for
the rows) the engine asks for it; every other tensor is the base's. Nothing merged is written.

Usage (:mod:`.sources` dispatches to this class; this module depends only on :mod:`.readers`)::

    from fusionbench_core.engine.sources import open_source
    from fusionbench_core.engine.lora import LoraSource

    base = open_source("models/llama-base")            # any TensorSource
    tuned = LoraSource(base, "adapters/math-lora")     # or: open_source("adapters/math-lora", base=base)
    tuned.get("model.layers.0.self_attn.q_proj.weight")  # base + scale·B·A, float32

Conventions (PEFT's ``adapter_config.json`` and ``adapter_model.safetensors``/``.bin``):

- Key mapping: ``base_model.model.<module>.lora_A.weight`` and ``…lora_B.weight`` give the delta of
  the base tensor ``<module>.weight`` (an adapter-name segment such as ``.default`` is dropped).
  ``lora_embedding_A``/``lora_embedding_B`` (embeddings) give ΔW = (B·A)ᵀ. Any other adapter tensor
  ``base_model.model.<name>`` (``modules_to_save``: heads trained in full) *replaces* ``<name>``.
- Scale: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` when ``use_rslora`` is true; ``r`` is read
  from A's shape and ``alpha_pattern`` entries override ``lora_alpha`` for modules whose name ends
  with (or fully matches, as a regex) the pattern.
- ``fan_in_fan_out: true`` (GPT-2's Conv1D stores Wᵀ) gives ΔW = (B·A)ᵀ.
- Unsupported (a one-line :class:`ModelLoadError`): DoRA magnitude vectors, convolutional LoRA.

Tensors with a delta come back in float32 (float64 when the base is float64), so the sum is not
rounded to the base's dtype before merging; :meth:`info` still reports the base's dtype, which is
what the merged output is written in by default.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..protocols import TensorInfo, TensorSource
from .readers import PickleSource, SafetensorsSource, get_rows, read_json_file

_PREFIX = "base_model.model."
_LORA_PART = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?(?:\.weight)?$")


def read_adapter_config(path: Path) -> dict:
    """A PEFT ``adapter_config.json``, checked: a JSON object of a LoRA adapter with a numeric
    ``lora_alpha``, flags that are booleans and an ``alpha_pattern`` of numbers; otherwise a one-line
    :class:`ModelLoadError` naming the file."""
    config = read_json_file(path, "adapter config", required=("lora_alpha",))
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise ModelLoadError(f"'{path}': a '{peft_type}' adapter, not LoRA (only LoRA adapters are merge inputs)")
    if not _number(config["lora_alpha"]):
        raise ModelLoadError(f"'{path}': 'lora_alpha' must be a number, got {config['lora_alpha']!r}")
    for flag in ("fan_in_fan_out", "use_rslora", "use_dora"):
        if config.get(flag) is not None and not isinstance(config[flag], bool):
            raise ModelLoadError(f"'{path}': '{flag}' must be true or false, got {config[flag]!r}")
    pattern = config.get("alpha_pattern")
    if pattern is not None and not (isinstance(pattern, dict) and all(_number(v) for v in pattern.values())):
        raise ModelLoadError(f"'{path}': 'alpha_pattern' must map module names to numbers, got {pattern!r}")
    return config


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class LoraSource:
    """A fine-tuned model given as ``base`` (a TensorSource) plus a PEFT LoRA adapter directory."""

    def __init__(self, base: TensorSource, adapter_dir: Path | str):
        self.base = base
        self.adapter_dir = Path(adapter_dir)
        self.config = read_adapter_config(self.adapter_dir / "adapter_config.json")
        if self.config.get("use_dora"):
            raise ModelLoadError(f"'{self.adapter_dir}': DoRA adapters are not supported as merge inputs")
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        self.use_rslora = bool(self.config.get("use_rslora", False))
        self.lora_alpha = float(self.config["lora_alpha"])
        self.alpha_pattern: dict[str, float] = dict(self.config.get("alpha_pattern") or {})
        tensors = self._load_adapter_tensors()
        base_keys = set(base.keys())
        self._deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]] = {}
        self._replaced: dict[str, torch.Tensor] = {}
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            stripped = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
            if "lora_magnitude_vector" in stripped:
                raise ModelLoadError(f"'{self.adapter_dir}': DoRA tensor '{name}' is not supported")
            match = _LORA_PART.match(stripped)
            if match:
                parts.setdefault(match["module"], {})[match["kind"]] = tensor
                continue
            target = stripped.replace(".modules_to_save.default", "")
            if target not in base_keys:
                raise ModelLoadError(f"'{self.adapter_dir}': adapter tensor '{name}' matches no base tensor '{target}'")
            self._replaced[target] = tensor
        for module, pair in parts.items():
            embedding = "lora_embedding_A" in pair or "lora_embedding_B" in pair
            a = pair.get("lora_embedding_A" if embedding else "lora_A")
            b = pair.get("lora_embedding_B" if embedding else "lora_B")
            if a is None or b is None:
                raise ModelLoadError(f"'{self.adapter_dir}': module '{module}' lacks its lora_A or lora_B tensor")
            if a.dim() != 2 or b.dim() != 2:
                raise ModelLoadError(f"'{self.adapter_dir}': module '{module}' is a convolutional LoRA (unsupported)")
            key = f"{module}.weight"
            if key not in base_keys:
                raise ModelLoadError(f"'{self.adapter_dir}': LoRA module '{module}' has no base tensor '{key}'")
            rank = a.shape[0]
            alpha = self._alpha_for(module)
            scale = alpha / math.sqrt(rank) if self.use_rslora else alpha / rank
            transpose = embedding or self.fan_in_fan_out
            shape = base.info(key).shape
            delta_shape = (a.shape[1], b.shape[0]) if transpose else (b.shape[0], a.shape[1])
            if tuple(shape) != delta_shape:
                raise ModelLoadError(f"'{self.adapter_dir}': ΔW of '{key}' has shape {list(delta_shape)} "
                                     f"but the base tensor has {list(shape)}")
            self._deltas[key] = (a, b, scale, transpose)

    def _load_adapter_tensors(self) -> dict[str, torch.Tensor]:
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            path = self.adapter_dir / name
            if path.exists():
                source = SafetensorsSource([path]) if path.suffix == ".safetensors" else PickleSource(path)
                return {key: source.get(key) for key in source.keys()}
        raise ModelLoadError(f"'{self.adapter_dir}': no adapter_model.safetensors or adapter_model.bin inside")

    def _alpha_for(self, module: str) -> float:
        for pattern, alpha in self.alpha_pattern.items():
            if module == pattern or module.endswith("." + pattern) or re.fullmatch(pattern, module):
                return float(alpha)
        return self.lora_alpha

    def scale(self, key: str) -> float:
        """The LoRA scale applied to ``key``'s B·A (``KeyError`` if it has no adapter)."""
        return self._deltas[key][2]

    @property
    def adapted_keys(self) -> list[str]:
        """Base tensor names that receive a ΔW."""
        return list(self._deltas)

    def keys(self) -> list[str]:
        """The base model's tensor names."""
        return self.base.keys()

    def info(self, key: str) -> TensorInfo:
        """The base tensor's shape and dtype."""
        return self.base.info(key)

    def get(self, key: str) -> torch.Tensor:
        """The whole tensor: base + ΔW where the adapter has one."""
        rows = self.base.info(key).shape
        return self.get_rows(key, 0, rows[0] if rows else 1)

    def get_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of base + ΔW (only those rows of B·A are computed)."""
        if key in self._replaced:
            tensor = self._replaced[key]
            return tensor.clone() if tensor.dim() == 0 else tensor[start:stop].clone()
        base = get_rows(self.base, key, start, stop)
        if key not in self._deltas:
            return base
        a, b, scale, transpose = self._deltas[key]
        work = torch.float64 if base.dtype == torch.float64 else torch.float32
        a, b = a.to(work), b.to(work)
        delta = (a[:, start:stop].T @ b.T) if transpose else (b[start:stop] @ a)
        return base.to(work).add_(delta, alpha=scale)
