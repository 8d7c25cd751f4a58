"""Checkpoints of one transformers architecture, read and written under canonical tensor names.

Hub checkpoints of one family disagree on names: GPT-2's base model stores ``h.0.…`` while a
``GPT2ForSequenceClassification`` expert stores ``transformer.h.0.…`` plus its ``score`` head, and T5
files may or may not repeat the tied embedding (``encoder.embed_tokens.weight`` is
``shared.weight``). :class:`Architecture` fixes one name per tensor (the model's own parameter and
persistent-buffer names, tied duplicates removed) and :class:`CanonicalSource` presents any such
file under those names, so every model of a pool has the same keys and the merge engine merges
exactly the tensors the architecture uses. Tensors the architecture has no place for (a task's
``score`` head, a separate ``lm_head`` this transformers ties) are left out.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fusionbench_core.engine.sources import RenamedSource
from fusionbench_core.errors import ModelLoadError, ShapeMismatchError
from fusionbench_core.protocols import TensorSource


class Architecture:
    """A transformers model class with its config: canonical tensor names, shapes, tied aliases."""

    def __init__(self, model_class: type, config: Any, *, prefixes: Sequence[str] = ("",)):
        self.model_class = model_class
        self.config = config
        self.prefixes = tuple(prefixes)
        with torch.device("meta"):
            shell = model_class(config)
        state_keys = list(shell.state_dict().keys())
        groups: dict[int, list[str]] = {}
        for name, param in shell.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        self.aliases: dict[str, list[str]] = {}
        alias_names: set[str] = set()
        for names in groups.values():
            self.aliases[names[0]] = names[1:]
            alias_names.update(names[1:])
        self._state_keys = state_keys
        self.keys = [key for key in state_keys if key not in alias_names]
        state = shell.state_dict()
        self.shapes = {key: tuple(state[key].shape) for key in state_keys}

    def untie_as_in(self, source: TensorSource) -> list[str]:
        """Give tied names their own tensor where ``source`` (the pretrained checkpoint) holds a different one.

        transformers does the same when loading: T5 ties ``lm_head`` to ``shared`` unless the file has
        a distinct ``lm_head.weight``, as the Flan-T5 checkpoints have. Returns the names untied.
        """
        present = set(source.keys())
        untied: list[str] = []
        for key, aliases in self.aliases.items():
            for alias in list(aliases):
                found = next((p + alias for p in self.prefixes if p + alias in present), None)
                canonical = next((p + key for p in self.prefixes if p + key in present), None)
                if found is None or canonical is None:
                    continue
                if not torch.equal(source.get(found), source.get(canonical)):
                    aliases.remove(alias)
                    untied.append(alias)
        alias_names = {alias for aliases in self.aliases.values() for alias in aliases}
        self.keys = [key for key in self._state_keys if key not in alias_names]
        return untied

    def candidates(self, key: str) -> list[str]:
        """File names that may hold canonical tensor ``key``, most likely first."""
        names = [key, *self.aliases.get(key, [])]
        return [prefix + name for name in names for prefix in self.prefixes]

    def build(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """A model (eval mode) carrying ``state``, keyed by canonical names (or names a file may use)."""
        canonical = self.canonicalise(state, where="the fused state")
        with torch.device("meta"):
            shell = self.model_class(self.config)
        model = self._load(shell, canonical)
        if any(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())):
            # A tensor outside the state dict (a non-persistent buffer) stayed unset: build for real.
            model = self._load(self.model_class(self.config), canonical)
        return model.eval()

    def _load(self, model: torch.nn.Module, canonical: dict[str, torch.Tensor]) -> torch.nn.Module:
        model.load_state_dict(canonical, strict=False, assign=True)
        # Tie by hand rather than with tie_weights(), which would also re-tie what untie_as_in() split.
        for key, aliases in self.aliases.items():
            for alias in aliases:
                owner, _, leaf = alias.rpartition(".")
                setattr(model.get_submodule(owner), leaf, model.get_parameter(key))
        return model

    def canonicalise(self, state: Mapping[str, torch.Tensor], *, where: str) -> dict[str, torch.Tensor]:
        """``state`` under canonical names; raise naming the first tensor missing or misshapen."""
        out: dict[str, torch.Tensor] = {}
        for key in self.keys:
            found = next((name for name in self.candidates(key) if name in state), None)
            if found is None:
                raise ShapeMismatchError(f"{where} lacks tensor '{key}' of {self.model_class.__name__}")
            tensor = state[found]
            if tuple(tensor.shape) != self.shapes[key]:
                raise ShapeMismatchError(f"tensor '{key}' has shape {list(tensor.shape)} in {where} "
                                         f"but {list(self.shapes[key])} in {self.model_class.__name__}")
            out[key] = tensor
        return out


class CanonicalSource(RenamedSource):
    """A :class:`TensorSource` view of a checkpoint file under an :class:`Architecture`'s names.

    Keys come in the architecture's order; row reads and the file's zero-copy fast paths are
    forwarded (:class:`~fusionbench_core.engine.sources.RenamedSource`).
    """

    def __init__(self, raw: TensorSource, architecture: Architecture, *, where: str):
        self.raw = raw
        self.architecture = architecture
        present = set(raw.keys())
        mapping: dict[str, str] = {}
        for key in architecture.keys:
            found = next((name for name in architecture.candidates(key) if name in present), None)
            if found is None:
                raise ModelLoadError(f"'{where}' lacks tensor '{key}' of {architecture.model_class.__name__}")
            shape = tuple(raw.info(found).shape)
            if shape != architecture.shapes[key]:
                raise ShapeMismatchError(f"tensor '{found}' has shape {list(shape)} in '{where}' "
                                         f"but {list(architecture.shapes[key])} in the pool's architecture")
            mapping[key] = found
        super().__init__(raw, mapping)


def save_pretrained_atomic(model: torch.nn.Module, path: Path, extra_dirs: Sequence[Path] = (),
                           extra_files: Sequence[str] = ()) -> None:
    """``model.save_pretrained(path)`` through a temporary directory renamed when complete.

    ``extra_files`` named in ``extra_dirs`` (tokenizer files of the pretrained model) are copied
    along, so the result loads with ``from_pretrained`` and evaluates with ``fb eval``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    for directory in extra_dirs:
        for name in extra_files:
            if (Path(directory) / name).exists() and not (tmp / name).exists():
                shutil.copy2(Path(directory) / name, tmp / name)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
