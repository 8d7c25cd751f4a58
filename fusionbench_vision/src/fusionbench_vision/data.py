"""Test and train images of a CLIP task: loading, preprocessing once, and the on-disk image cache.

Datasets are found through :func:`fusionbench_core.hub.resolve_dataset`. A local directory (under
``FUSIONBENCH_DATA_ROOT``) written by ``datasets``' ``save_to_disk`` — a ``DatasetDict`` with the
split names, or one ``Dataset`` per split in ``<dir>/<split>`` — is read with ``load_from_disk``;
any other local directory, and every hub id, is read with ``load_dataset(path, config, split=...)``
(so a directory of parquet files or an image folder works offline too).

Preprocessing is the pretrained model's: the shortest edge resized to the processor's size (Pillow,
its resample filter), then a centre crop. The resulting ``uint8`` images are cached per task as
``.npy`` files under ``<FUSIONBENCH_CACHE>/clip-images``; normalisation (mean, std) is done on the
device at evaluation time, which keeps the cache four times smaller than float pixels.

A generated corruption (:mod:`fusionbench_vision.corruptions`) is applied to each raw image, at its
native size, before that preprocessing, as upstream's generator is; the corrupted set is cached apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fusionbench_core.errors import ModelLoadError
from fusionbench_core.hub import cache_dir, resolve_dataset
from fusionbench_core.progress import track
from PIL import Image

from .tasks import TaskSpec

CACHE_VERSION = 1


class DatasetLoadError(ModelLoadError):
    """A task's dataset could not be found or read."""


@dataclass(frozen=True)
class ImageProcessing:
    """The pretrained processor's geometry and normalisation."""

    size: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = int(Image.Resampling.BICUBIC)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageProcessing:
        """From the fields of a ``preprocessor_config.json``."""
        size = config.get("size", 224)
        size = size.get("shortest_edge", size.get("height", 224)) if isinstance(size, dict) else size
        crop = config.get("crop_size", size)
        crop_h, crop_w = (crop.get("height", size), crop.get("width", size)) if isinstance(crop, dict) else (crop, crop)
        return cls(
            size=int(size),
            crop_height=int(crop_h),
            crop_width=int(crop_w),
            mean=tuple(config.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(config.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
            resample=int(config.get("resample", int(Image.Resampling.BICUBIC))),
        )

    @classmethod
    def from_pretrained(cls, identifier: str, path: str) -> ImageProcessing:
        """Read ``preprocessor_config.json`` of a local directory or a hub id."""
        local = Path(path) / "preprocessor_config.json"
        if Path(path).is_dir():
            if not local.exists():
                raise ModelLoadError(f"model '{identifier}' at '{path}' has no preprocessor_config.json (the CLIP processor)")
            return cls.from_config(json.loads(local.read_text()))
        try:
            from huggingface_hub import hf_hub_download

            return cls.from_config(json.loads(Path(hf_hub_download(identifier, "preprocessor_config.json")).read_text()))
        except Exception as exc:  # noqa: BLE001 - hub failures of every kind become one line
            raise ModelLoadError(
                f"cannot fetch the processor of '{identifier}' ({type(exc).__name__}); "
                f"put a copy at <FUSIONBENCH_MODEL_ROOT>/{identifier} or allow hub access"
            ) from exc

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Resize the shortest edge, centre-crop; ``uint8`` array of shape (3, crop_height, crop_width)."""
        image = image.convert("RGB")
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.size * long / short)
        new_w, new_h = (self.size, new_long) if w <= h else (new_long, self.size)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=self.resample)
        left = max(0, (new_w - self.crop_width) // 2)
        top = max(0, (new_h - self.crop_height) // 2)
        image = image.crop((left, top, left + self.crop_width, top + self.crop_height))
        return np.array(image, dtype=np.uint8).transpose(2, 0, 1)


def load_split(spec: TaskSpec, split: str) -> Any:
    """The ``datasets.Dataset`` of one split of ``spec``'s dataset (see the module docstring)."""
    import datasets

    path = resolve_dataset(spec.dataset)
    local = Path(path)
    try:
        if spec.config and (local / spec.config).is_dir():
            local = local / spec.config
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / split / "state.json").exists()
                               or (local / "state.json").exists()):
            if (local / split / "state.json").exists():
                return datasets.load_from_disk(str(local / split))
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DatasetLoadError(
                        f"dataset '{spec.dataset}' at '{local}' has no split '{split}' (it has: {', '.join(loaded)})"
                    )
                return loaded[split]
            return loaded
        return datasets.load_dataset(path, spec.config, split=split)
    except DatasetLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetLoadError(
            f"cannot load split '{split}' of dataset '{spec.dataset}' (task {spec.name}) from '{path}': {first}; "
            f"put a copy at <FUSIONBENCH_DATA_ROOT>/{spec.dataset} or allow hub access"
        ) from exc


def _column(dataset: Any, wanted: str, fallback: str, kind: str, spec: TaskSpec) -> str:
    if wanted in dataset.column_names:
        return wanted
    if fallback in dataset.column_names:
        return fallback
    raise DatasetLoadError(
        f"dataset '{spec.dataset}' (task {spec.name}) has no {kind} column '{wanted}' (columns: {', '.join(dataset.column_names)})"
    )


def select_indices(length: int, examples: int, seed: int) -> np.ndarray:
    """All indices, or ``examples`` of them drawn without replacement by a seeded generator (sorted)."""
    if examples <= 0 or examples >= length:
        return np.arange(length)
    return np.sort(np.random.default_rng(seed).choice(length, size=examples, replace=False))


VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 0
"""Upstream's held-out validation set: 10 % of train, drawn with seed 0 (``train_validation_split``)."""


def validation_indices(length: int, fraction: float = VALIDATION_FRACTION, seed: int = VALIDATION_SEED) -> np.ndarray:
    """Indices of the validation part of a train split, in upstream's order.

    Upstream calls ``torch.utils.data.random_split(train, [n - v, v], generator=Generator().manual_seed(0))``
    with ``v = int(n · 0.1)``: a seeded permutation of ``range(n)`` whose last ``v`` entries are validation.
    """
    import torch

    count = int(length * fraction)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    return order[length - count:].numpy().astype(np.int64)


class _Preprocessed:
    """A torch-style dataset that preprocesses one example per item (used with DataLoader workers).

    With ``corruption`` = ``(name, severity, seed)`` each raw image is corrupted first
    (:func:`fusionbench_vision.corruptions.corrupt`, seeded by its row index), then preprocessed.
    """

    def __init__(self, dataset: Any, indices: np.ndarray, image_column: str, label_column: str,
                 processing: ImageProcessing, corruption: tuple[str, int, int] | None = None):
        self.dataset, self.indices = dataset, indices
        self.image_column, self.label_column, self.processing = image_column, label_column, processing
        self.corruption = corruption

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        row = self.dataset[int(self.indices[i])]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if self.corruption is not None:
            from .corruptions import corrupt

            name, severity, seed = self.corruption
            image = corrupt(image.convert("RGB"), name, severity, seed=seed, index=int(self.indices[i]))
        return self.processing(image), int(row[self.label_column])


def _collate(items: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([image for image, _ in items]), np.array([label for _, label in items], dtype=np.int64)


@dataclass(frozen=True)
class ImageSet:
    """Cached preprocessed images of one task split: ``images`` (N, 3, H, W) uint8, ``labels`` (N,) int64."""

    images_path: Path
    labels_path: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped images and in-memory labels."""
        return np.load(self.images_path, mmap_mode="r"), np.load(self.labels_path)

    def __len__(self) -> int:
        return int(np.load(self.labels_path, mmap_mode="r").shape[0])


def _fingerprint(spec: TaskSpec, split: str, processing: ImageProcessing, examples: int, seed: int,
                 corruption: str | None, severity: int, holdout: bool) -> str:
    path = resolve_dataset(spec.dataset)
    stamp = os.stat(path).st_mtime_ns if Path(path).exists() else None
    generator = None
    if corruption:
        from .corruptions import GENERATOR as generator
    key = json.dumps([CACHE_VERSION, spec.dataset, path, stamp, spec.config, split, asdict(processing),
                      examples, seed, corruption, severity] + ([generator] if generator else [])
                     + ([["holdout", VALIDATION_FRACTION, VALIDATION_SEED]] if holdout else []), default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def cached_images(spec: TaskSpec, split: str, processing: ImageProcessing, *, examples: int = 0, seed: int = 0,
                  num_workers: int = 0, corruption: str | None = None, severity: int = 3,
                  holdout: bool = False) -> ImageSet:
    """Preprocess ``split`` of ``spec`` once (optionally corrupted) and return the cached arrays.

    ``holdout`` keeps only upstream's validation part of the split (:func:`validation_indices`), the
    first ``examples`` of it when ``examples`` is set.
    """
    key = _fingerprint(spec, split, processing, examples, seed, corruption, severity, holdout)
    folder = cache_dir("clip-images", spec.name.replace("/", "_"))
    tag = f"{split}-{corruption}-s{severity}" if corruption else split
    tag = f"{tag}-val10" if holdout else tag
    result = ImageSet(folder / f"{tag}-{key}-images.npy", folder / f"{tag}-{key}-labels.npy")
    if result.images_path.exists() and result.labels_path.exists():
        return result
    from torch.utils.data import DataLoader

    dataset = load_split(spec, split)
    image_column = _column(dataset, spec.image_column, "image", "image", spec)
    label_column = _column(dataset, spec.label_column, "label", "label", spec)
    if holdout:
        indices = validation_indices(len(dataset))
        indices = indices[:examples] if examples > 0 else indices
    else:
        indices = select_indices(len(dataset), examples, seed)
    out = np.empty((len(indices), 3, processing.crop_height, processing.crop_width), dtype=np.uint8)
    labels = np.empty(len(indices), dtype=np.int64)
    corrupting = (corruption, severity, seed) if corruption else None
    what = f"{corruption} (severity {severity}) and preprocessing" if corruption else "preprocessing"
    loader = DataLoader(_Preprocessed(dataset, indices, image_column, label_column, processing, corrupting),
                        batch_size=64, num_workers=num_workers, collate_fn=_collate)
    start = 0
    for images, batch_labels in track(loader, f"{spec.name}: {what} {len(indices)} images"):
        out[start : start + len(images)] = images
        labels[start : start + len(images)] = batch_labels
        start += len(images)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.classnames)):
        raise DatasetLoadError(
            f"dataset '{spec.dataset}' (task {spec.name}) has label {int(labels.max())} outside its "
            f"{len(spec.classnames)} classes"
        )
    _write_atomic(result.labels_path, labels)
    _write_atomic(result.images_path, out)
    return result
