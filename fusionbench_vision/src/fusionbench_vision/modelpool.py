"""CLIP vision model pools: the pretrained vision tower and one fine-tuned expert per task.

Models are loaded by hub id with ``from_pretrained`` (``CLIPVisionModel``), each id first looked up
under ``FUSIONBENCH_MODEL_ROOT``; the options ``pretrained`` and ``models`` point a pool at local
directories instead. :meth:`CLIPVisionModelPool.tensors` reads a local checkpoint lazily (memory
mapped safetensors); a hub model is loaded and its state wrapped. LoRA-16 experts are PEFT adapters
on the pretrained vision tower, merged into it when loaded.

The pool is also a data model pool: :meth:`~CLIPVisionModelPool.batches` hands out preprocessed
images of a task's train (or test) split and :meth:`~CLIPVisionModelPool.logits` scores a vision tower
with the task's zero-shot head, for methods that need data.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from fusionbench_core.errors import ConfigError, ModelLoadError, UnknownComponentError
from fusionbench_core.naming import tensor_naming
from fusionbench_core.protocols import PRETRAINED, DataRequest, Hyperparameter, TensorSource

from .loading import VISION_PREFIX, check_clip, checkpoint_keys, from_pretrained, load_into, resolve, vision_source
from .suites import CORRUPTIONS, SuiteSpec, get_suite
from .tasks import CLASSNAME_SETS, get_task


def parse_overrides(items: list[Any], known: list[str], owner: str) -> dict[str, str]:
    """``["task=path", ...]`` → ``{task: path}``, every task checked."""
    out: dict[str, str] = {}
    for item in items:
        task, sep, path = str(item).partition("=")
        if not sep or not path:
            raise ConfigError(f"option 'models' of {owner} expects TASK=PATH_OR_ID entries, got '{item}'")
        if task not in known:
            raise UnknownComponentError("task", task, known, owner=owner)
        out[task] = path
    return out


class CLIPVisionModelPool:
    """A CLIP suite's models: ``_pretrained_`` (the vision tower of the pretrained CLIP) and one expert per task.

    One class serves every CLIP suite: ``name`` (the registered suite name, e.g. ``clip-vit-b32-ta8``)
    selects the backbone, the tasks and the expert ids from :data:`fusionbench_vision.suites.SUITES`.
    """

    options = (
        Hyperparameter("pretrained", str, "", "Hub id or local directory of the pretrained CLIP model (default: the suite's)."),
        Hyperparameter("models", list, [], "Overrides TASK=PATH_OR_ID for experts, e.g. mnist=/ckpt/mnist."),
        Hyperparameter("tasks", list, [], "Use only these tasks (default: all of the suite)."),
        Hyperparameter("device", str, "auto", "Device for logits() when the pool hands out data: auto, cpu, cuda."),
        Hyperparameter("classnames", str, "fixed", "Class names of the zero-shot heads logits() uses: fixed (ours) "
                       "or upstream (byte for byte upstream's).", choices=CLASSNAME_SETS),
        Hyperparameter("test_corruption", str, "clean",
                       "Robustness suites: test-time data (AdaMerging, WEMoE, ...) from this corruption's "
                       "pre-corrupted hub split, as upstream adapts on the corrupted test set (clean: the test split).",
                       choices=("clean", *CORRUPTIONS)),
    )

    def __init__(self, name: str, pretrained: str = "", models: list | None = None,
                 tasks: list | None = None, device: str = "auto", classnames: str = "fixed",
                 test_corruption: str = "clean"):
        self.suite: SuiteSpec = get_suite(name, "model pools")
        self.name = name
        self.pretrained_id = pretrained or self.suite.pretrained_id
        owner = f"model pool '{self.name}'"
        self._tasks = [str(t) for t in (tasks or [])] or self.suite.expert_tasks
        for task in self._tasks:
            if task not in self.suite.expert_tasks:
                raise UnknownComponentError("task", task, self.suite.expert_tasks, owner=owner)
        overrides = parse_overrides(list(models or []), self.suite.expert_tasks, owner)
        self.model_ids = {task: overrides.get(task, self.suite.expert_id(task)) for task in self._tasks}
        self.device = device
        if classnames not in CLASSNAME_SETS:
            raise ConfigError(f"option 'classnames' of {owner} must be one of {', '.join(CLASSNAME_SETS)}, "
                              f"got '{classnames}'")
        self.classnames = classnames
        if test_corruption != "clean" and (not self.suite.robustness or test_corruption not in CORRUPTIONS):
            raise ConfigError(f"option 'test_corruption' of {owner} must be clean"
                              + (f" or one of {', '.join(CORRUPTIONS)}" if self.suite.robustness else
                                 " (only robustness suites have corrupted test splits)") + f", got '{test_corruption}'")
        self.test_corruption = test_corruption
        self._pretrained: Any = None
        self._classifier: Any = None

    # -- ModelPool --------------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        """The task names of the experts."""
        return list(self._tasks)

    def fingerprint(self) -> str:
        """Content hash of the checkpoints (or adapters) read (``fusionbench_core.experiments.fingerprint``):
        runs are reused only on the same weights."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        return inputs_fingerprint(models=[self.pretrained_id, *self.model_ids.values()])

    @property
    def has_pretrained(self) -> bool:
        """Always true: every CLIP suite has its pretrained model."""
        return True

    def _id(self, name: str) -> str:
        if name == PRETRAINED:
            return self.pretrained_id
        if name not in self.model_ids:
            raise UnknownComponentError("model", name, [PRETRAINED, *self.model_ids], owner=f"model pool '{self.name}'")
        return self.model_ids[name]

    def _load_pretrained(self) -> torch.nn.Module:
        if self._pretrained is None:
            from transformers import CLIPVisionModel

            path = resolve(self.pretrained_id)
            check_clip(path, self.pretrained_id)
            self._pretrained = from_pretrained(CLIPVisionModel, self.pretrained_id, path).eval()
            try:  # the naming contract (fusionbench_core.naming), checked once, before any method pairs names
                tensor_naming(self, self._pretrained, self.tensors(PRETRAINED).keys())
            except ConfigError:
                self._pretrained = None
                raise
        return self._pretrained

    def module_name(self, key: str) -> str:
        """The loaded ``CLIPVisionModel``'s name of tensor ``key``.

        Tensors keep checkpoint names (``vision_model.encoder...``) under every transformers version;
        transformers 4 nests the tower under ``vision_model`` and keeps that prefix, transformers 5
        flattens ``CLIPVisionModel`` and drops it. Methods translate through
        :func:`fusionbench_core.naming.tensor_naming`.
        """
        if hasattr(self._load_pretrained(), "vision_model"):
            return key
        return key.removeprefix(VISION_PREFIX)

    def load_model(self, name: str) -> torch.nn.Module:
        """The vision tower of model ``name`` (a private ``CLIPVisionModel``)."""
        identifier = self._id(name)
        if name == PRETRAINED:
            return copy.deepcopy(self._load_pretrained())
        path = resolve(identifier)
        if self.suite.variant == "lora16" or (Path(path) / "adapter_config.json").exists():
            return self._load_lora(identifier, path)
        from transformers import CLIPVisionModel

        check_clip(path, identifier)
        model = from_pretrained(CLIPVisionModel, identifier, path).eval()
        self._check_architecture(model, identifier)
        return model

    def _load_lora(self, identifier: str, path: str) -> torch.nn.Module:
        try:
            from peft import PeftModel
            from peft.utils import get_peft_model_state_dict, load_peft_weights
        except ImportError as exc:
            raise ModelLoadError(f"expert '{identifier}' is a LoRA adapter: pip install peft") from exc
        model = copy.deepcopy(self._load_pretrained())
        if Path(path).is_dir() and not (Path(path) / "adapter_config.json").exists():
            raise ModelLoadError(f"expert '{identifier}' at '{path}' is not a PEFT adapter (no adapter_config.json)")
        # Upstream trained its adapters with PEFT on CLIPVisionModel.vision_model (the transformer with
        # embeddings/encoder children). transformers 4 nests that module; transformers 5 flattens
        # CLIPVisionModel into it. PEFT applied anywhere else only warns and leaves every lora_B at zero.
        tower = getattr(model, "vision_model", model)
        try:
            with warnings.catch_warnings():  # a misfit is reported below, in one line
                warnings.filterwarnings("ignore", message="Found missing adapter keys")
                adapted = PeftModel.from_pretrained(tower, path)
            stored = set(load_peft_weights(path).keys())
            placed = set(get_peft_model_state_dict(adapted).keys())
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"cannot apply LoRA adapter '{identifier}' from '{path}': {first}") from exc
        unplaced = sorted(stored - placed)
        if unplaced or not stored:
            what = f"its tensor '{unplaced[0]}' matches no module" if unplaced else "it holds no tensors"
            raise ModelLoadError(f"LoRA adapter '{identifier}' at '{path}' does not fit the CLIP vision tower: {what} "
                                 "(adapters are expected on CLIPVisionModel.vision_model, as upstream trains them)")
        merged = adapted.merge_and_unload()
        if tower is not model:
            model.vision_model = merged
            return model.eval()
        return merged.eval()

    def _check_architecture(self, model: torch.nn.Module, identifier: str) -> None:
        expected = self._load_pretrained().config
        got = model.config
        for field in ("hidden_size", "num_hidden_layers", "patch_size", "image_size"):
            if getattr(got, field, None) != getattr(expected, field, None):
                raise ModelLoadError(
                    f"expert '{identifier}' has {field}={getattr(got, field, None)} but the pretrained "
                    f"'{self.pretrained_id}' has {getattr(expected, field, None)}: it was not fine-tuned from it"
                )

    def tensors(self, name: str) -> TensorSource:
        """Lazy access to a vision tower's tensors, under checkpoint names (``vision_model.*``)."""
        identifier = self._id(name)
        path = resolve(identifier)
        if name == PRETRAINED:
            check_clip(path, identifier)
            return vision_source(identifier, path, self._load_pretrained)
        if self.suite.variant == "lora16" or (Path(path) / "adapter_config.json").exists():
            from fusionbench_core.engine.sources import StateDictSource

            return StateDictSource(checkpoint_keys(self.load_model(name).state_dict()))
        check_clip(path, identifier)
        return vision_source(identifier, path, lambda: self.load_model(name))

    def build_model(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """A ``CLIPVisionModel`` of the pretrained architecture carrying ``state``."""
        return load_into(copy.deepcopy(self._load_pretrained()), state).eval()

    def save_model(self, model: torch.nn.Module, path: Path) -> None:
        """Save a vision tower in HF format (``config.json`` + safetensors), via a temporary directory."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(str(tmp))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    def architecture(self):
        """An :class:`~fusionbench_core.protocols.ArchitectureSpec` of ``CLIPVisionModel``: the encoder's layers,
        their ``mlp`` modules and ``nn.Linear`` (names below ``vision_model.`` where transformers nests the tower)."""
        from fusionbench_core.protocols import ArchitectureSpec

        prefix = "vision_model." if hasattr(self._load_pretrained(), "vision_model") else ""
        return ArchitectureSpec(layers=f"{prefix}encoder.layers", mlps=(f"{prefix}encoder.layers.*.mlp",),
                                linear_types=("Linear",))

    # -- DataModelPool ----------------------------------------------------------------------

    def _zero_shot(self) -> Any:
        if self._classifier is None:
            from .zeroshot import ZeroShotClassifier

            self._classifier = ZeroShotClassifier(self.pretrained_id, device=self.device)
        return self._classifier

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """Normalised pixel batches (float32, CPU) of ``task``'s ``request.split`` with labels (or None).

        ``train`` is the whole train split; ``validation`` is upstream's held-out 10 % of it (seed 0,
        :func:`~fusionbench_vision.data.validation_indices`); ``test`` is the test split, or the
        ``test_corruption`` split of a robustness suite.
        """
        from .data import cached_images

        if task not in self._tasks:
            raise UnknownComponentError("task", task, self._tasks, owner=f"model pool '{self.name}'")
        spec = get_task(task)
        split = spec.train_split if request.split in ("train", "validation") else spec.split
        if request.split == "test" and self.test_corruption != "clean":
            split = self.test_corruption  # upstream's pre-corrupted split of the same dataset
        classifier = self._zero_shot()
        images, labels = cached_images(spec, split, classifier.processing, examples=request.examples or 0,
                                       holdout=request.split == "validation").load()
        mean = torch.tensor(classifier.processing.mean).view(1, 3, 1, 1)
        std = torch.tensor(classifier.processing.std).view(1, 3, 1, 1)
        for start in range(0, len(labels), batch_size):
            pixels = torch.from_numpy(images[start : start + batch_size].copy()).float().div_(255.0).sub_(mean).div_(std)
            yield pixels, (torch.from_numpy(labels[start : start + batch_size]) if request.labelled else None)

    def logits(self, task: str, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits of vision tower ``model`` on normalised ``inputs`` with ``task``'s head (float32)."""
        classifier = self._zero_shot()
        device = next(model.parameters()).device
        head = classifier.head(get_task(task, self.classnames)).to(device)
        projection = classifier.projection().to(device)
        # a head built in this process comes out of inference mode, and autograd cannot save such a tensor
        head, projection = (t.clone() if t.is_inference() else t for t in (head, projection))
        pooled = model(pixel_values=inputs.to(device)).pooler_output
        embeds = torch.nn.functional.normalize(pooled.float() @ projection.T, dim=-1)
        return embeds @ head.T

