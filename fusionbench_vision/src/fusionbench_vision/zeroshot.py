"""Zero-shot CLIP classification: text heads built once per (model, task) and cached, batched scoring.

A head holds one row per class: every prompt template filled with the class name goes through the
pretrained text encoder and ``text_projection``; the embeddings are L2-normalised, averaged over
templates, renormalised and scaled by ``logit_scale.exp()``. Logits are then
``normalise(visual_projection(vision_tower(pixels).pooler_output)) @ head.T``; only the vision tower
varies between evaluated models, ``visual_projection`` is the pretrained model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fusionbench_core.engine.devices import resolve_device
from fusionbench_core.hub import cache_dir
from fusionbench_core.progress import track
from fusionbench_core.protocols import Predictions, task_logits
from safetensors.torch import load_file, save_file

from .data import ImageProcessing, ImageSet
from .loading import check_clip, from_pretrained, resolve
from .tasks import TaskSpec

HEAD_BATCH = 256
HEAD_VERSION = 1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision``: none for ``fp32``; ``auto`` is float16 on GPU, none on CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _fingerprint(path: str) -> str:
    """Identity of a pretrained checkpoint: its id or path, plus weight-file size and mtime when local."""
    directory = Path(path)
    stamp: list[Any] = [path]
    if directory.is_dir():
        for file in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
            info = file.stat()
            stamp.append([file.name, info.st_size, info.st_mtime_ns])
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:12]


class ZeroShotClassifier:
    """The text side of a pretrained CLIP model: processing, projection, heads (cached on disk)."""

    def __init__(self, pretrained_id: str, *, device: str = "auto", precision: str = "fp32"):
        self.pretrained_id = pretrained_id
        self.path = resolve(pretrained_id)
        check_clip(self.path, pretrained_id, allowed=("clip",))
        self.device = resolve_device(device)
        self.autocast = autocast_dtype(precision, self.device)
        self.processing = ImageProcessing.from_pretrained(pretrained_id, self.path)
        self._clip: Any = None
        self._projection: torch.Tensor | None = None
        self._heads: dict[TaskSpec, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.key = _fingerprint(self.path)

    # -- pretrained parts -------------------------------------------------------------------

    def _clip_model(self) -> Any:
        if self._clip is None:
            from transformers import CLIPModel

            self._clip = from_pretrained(CLIPModel, self.pretrained_id, self.path).eval()
        return self._clip

    def projection(self) -> torch.Tensor:
        """``visual_projection.weight`` of the pretrained model, float32 on the device."""
        if self._projection is None:
            weight = None
            if Path(self.path).is_dir():
                from fusionbench_core.engine.sources import open_source

                source = open_source(self.path)
                if "visual_projection.weight" in source.keys():
                    weight = source.get("visual_projection.weight")
            if weight is None:
                weight = self._clip_model().visual_projection.weight.detach()
            self._projection = weight.float().to(self.device)
        return self._projection

    # -- heads ------------------------------------------------------------------------------

    def head_file(self, spec: TaskSpec) -> Path:
        """Where the head of ``spec`` is cached for this pretrained model."""
        content = json.dumps([HEAD_VERSION, spec.classnames, spec.templates]).encode()
        digest = hashlib.sha256(content).hexdigest()[:12]
        folder = cache_dir("clip-heads", self.pretrained_id.replace("/", "__") + "-" + self.key)
        return folder / f"{spec.name}-{digest}.safetensors"

    def head(self, spec: TaskSpec) -> torch.Tensor:
        """The zero-shot head of ``spec`` (classes × projection dim, scaled), float32 on the device."""
        with self._lock:
            if spec not in self._heads:
                file = self.head_file(spec)
                if file.exists():
                    weight = load_file(str(file))["weight"]
                else:
                    weight = self.build_head(spec)
                    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
                    save_file({"weight": weight.contiguous()}, str(tmp), metadata={"task": spec.name})
                    os.replace(tmp, file)
                self._heads[spec] = weight.float().to(self.device)
            return self._heads[spec]

    @torch.inference_mode()
    def build_head(self, spec: TaskSpec) -> torch.Tensor:
        """Embed every (class, template) prompt with the pretrained text encoder; returns a CPU tensor."""
        from transformers import AutoTokenizer

        from .loading import quiet_transformers

        quiet_transformers()
        clip = self._clip_model().to(self.device)
        tokenizer = self._tokenizer(AutoTokenizer)
        prompts = [prompt for name in spec.classnames for prompt in spec.prompts(name)]
        max_length = clip.config.text_config.max_position_embeddings
        embeddings = []
        for start in track(range(0, len(prompts), HEAD_BATCH), f"{spec.name}: zero-shot head"):
            batch = tokenizer(prompts[start : start + HEAD_BATCH], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(self.device)
            pooled = clip.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
            embeddings.append(F.normalize(clip.text_projection(pooled).float(), dim=-1))
        per_template = torch.cat(embeddings).view(len(spec.classnames), len(spec.templates), -1)
        head = F.normalize(per_template.mean(dim=1), dim=-1)
        head = head * clip.logit_scale.exp().float()
        clip.to("cpu")
        return head.cpu()

    def _tokenizer(self, auto: Any) -> Any:
        return from_pretrained(auto, self.pretrained_id, self.path)

    # -- scoring ----------------------------------------------------------------------------

    def normaliser(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per channel so that ``uint8 * scale - shift`` is the normalised pixel."""
        mean = torch.tensor(self.processing.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.processing.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        return 1.0 / (255.0 * std), mean / std

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` images (N, 3, H, W) → normalised float32 pixels on the device."""
        scale, shift = self.normaliser()
        return images.to(self.device, non_blocking=True).float().mul_(scale).sub_(shift)

    def logits(self, vision: torch.nn.Module, pixels: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """Float32 logits of ``vision`` (a CLIP vision tower) on normalised ``pixels``."""
        context = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else nullcontext()
        with context:
            pooled = vision(pixel_values=pixels).pooler_output
        embeds = F.normalize(pooled.float() @ self.projection().T, dim=-1)
        return embeds @ head.T

    @torch.inference_mode()
    def evaluate(self, vision: torch.nn.Module, spec: TaskSpec, images: ImageSet, *, batch_size: int = 128,
                 num_workers: int = 0, resident: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``vision`` on the cached ``images`` of ``spec``.

        ``resident`` holds the same images and labels already on the device (see :meth:`upload`);
        without it, batches stream from the on-disk cache through loader workers.
        """
        return self.score(vision, spec, images, batch_size=batch_size, num_workers=num_workers, resident=resident)[0]

    @torch.inference_mode()
    def score(self, vision: torch.nn.Module, spec: TaskSpec, images: ImageSet, *, batch_size: int = 128,
              num_workers: int = 0, resident: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> tuple[dict[str, float], Predictions]:
        """:meth:`evaluate` and the per-example :class:`~fusionbench_core.protocols.Predictions`, in the
        image set's order (the same for every model scored on it)."""
        head = self.head(spec)
        if resident is not None:
            total = len(resident[1])
            batches: Any = ((resident[0][i : i + batch_size], resident[1][i : i + batch_size])
                            for i in range(0, total, batch_size))
        else:
            total = len(images)
            batches = batch_loader(images, batch_size, num_workers, self.device.type == "cuda")
        if total == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}, Predictions((), ())
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        guesses, targets = [], []
        for batch, labels in track(batches, f"{spec.name}: evaluating", total=-(-total // batch_size)):
            labels = labels.to(self.device, non_blocking=True)
            logits = task_logits(vision, lambda member, pixels: self.logits(member, pixels, head), self.pixels(batch))
            guess = logits.argmax(dim=1)
            correct += (guess == labels).sum()
            loss += F.cross_entropy(logits, labels, reduction="sum").double()
            guesses.append(guess)
            targets.append(labels)
        predictions = Predictions(tuple(torch.cat(guesses).tolist()), tuple(torch.cat(targets).tolist()))
        return {"accuracy": correct.item() / total, "loss": loss.item() / total}, predictions

    def upload(self, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached ``uint8`` images and labels copied to the device once (for repeated evaluations)."""
        array, labels = images.load()
        return torch.from_numpy(np.array(array)).to(self.device), torch.from_numpy(labels).to(self.device)


class _Batches:
    """Batch ``i`` of a cached image set (memory-mapped, opened lazily in each worker)."""

    def __init__(self, images: ImageSet, batch_size: int):
        self.paths, self.batch_size = images, batch_size
        self.length = len(images)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-self.length // self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._arrays is None:
            self._arrays = self.paths.load()
        images, labels = self._arrays
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return torch.from_numpy(np.array(images[sl])), torch.from_numpy(np.array(labels[sl]))


def batch_loader(images: ImageSet, batch_size: int, num_workers: int, pin: bool) -> Any:
    """Batches of (uint8 images, labels), read by ``num_workers`` background workers (0: in process)."""
    from torch.utils.data import DataLoader

    return DataLoader(_Batches(images, batch_size), batch_size=None, shuffle=False, num_workers=num_workers,
                      pin_memory=pin, prefetch_factor=4 if num_workers else None,
                      persistent_workers=False)
