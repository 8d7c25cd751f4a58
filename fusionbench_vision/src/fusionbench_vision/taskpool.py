"""CLIP zero-shot task pools: each task's test set scored with the pretrained text encoder's head.

Only the vision tower changes between evaluated models; heads, ``visual_projection`` and the
preprocessing are the pretrained model's (see :mod:`fusionbench_vision.zeroshot`). Images are
preprocessed once per task and cached (:mod:`fusionbench_vision.data`); evaluation runs batched under
``torch.inference_mode`` in float32 (as upstream; autocast is opt-in with ``precision``) and background
workers reading the cache.
The robustness pools score the clean test sets and each of the seven corruptions, reported as
``<task>`` and ``<task>/<corruption>``: upstream's pre-corrupted hub splits by default, or the
corruptions of :mod:`fusionbench_vision.corruptions` (upstream's generator and constants) applied to
the raw clean test images before preprocessing.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from fusionbench_core.errors import ConfigError, UnknownComponentError
from fusionbench_core.protocols import EvaluationReport, Hyperparameter

from .suites import CORRUPTION_SOURCES, CORRUPTIONS, SuiteSpec, get_suite
from .tasks import CLASSNAME_SETS, get_task

_COMMON = (
    Hyperparameter("examples", int, 0, "Evaluate at most this many test examples per task, drawn with `seed` (0: all)."),
    Hyperparameter("batch_size", int, 128, "Images per forward pass."),
    Hyperparameter("num_workers", int, -1, "Data loader workers for preprocessing and reading (-1: auto)."),
    Hyperparameter("device", str, "auto", "auto (CUDA when available), cpu, cuda or cuda:N."),
    Hyperparameter("precision", str, "fp32",
                   "Vision tower precision: fp32 (upstream's), or autocast to fp16 or bf16; auto is fp16 on a GPU, "
                   "fp32 on CPU. Autocast can flip near-tie predictions.",
                   choices=("fp32", "fp16", "bf16", "auto")),
    Hyperparameter("device_cache_gb", float, 8.0,
                   "On a GPU, keep up to this many GB of each task's preprocessed uint8 images on the device "
                   "between evaluations (a sweep then reads them once); 0 streams from the disk cache every time."),
    Hyperparameter("seed", int, 0, "Seed for the example subset and the corruptions."),
    Hyperparameter("pretrained", str, "", "Hub id or local directory of the pretrained CLIP (default: the suite's)."),
    Hyperparameter("tasks", list, [], "Evaluate only these tasks (default: all of the suite)."),
    Hyperparameter("classnames", str, "fixed",
                   "Class names of the zero-shot heads: fixed (ours) or upstream (byte for byte upstream's: "
                   "CIFAR-100 'cra', Flowers102 'pink-yellow dahlia?').", choices=CLASSNAME_SETS),
)
_ROBUSTNESS = (
    Hyperparameter("corruption", str, "all", "clean, one corruption, or all (clean plus the seven).",
                   choices=("all", "clean", *CORRUPTIONS)),
    Hyperparameter("corruption_source", str, "hub",
                   "hub: upstream's pre-corrupted test splits, read by id (the split named after the corruption "
                   "of the task's dataset, e.g. tanganke/gtsrb [motion_blur]); generated: corrupt the raw clean "
                   "test images on the fly, before preprocessing, with upstream's generator and CIFAR-10-C "
                   "constants (pixelate to 32x32), seeded per image.",
                   choices=CORRUPTION_SOURCES),
    Hyperparameter("severity", int, 3, "Severity of generated corruptions, 1 (mild) to 5 (strongest); "
                   "upstream's hub splits record none.",
                   choices=(1, 2, 3, 4, 5)),
)


def auto_workers(requested: int) -> int:
    """``-1`` → up to 8 workers, one of the cores this process may use left for the main process."""
    if requested >= 0:
        return requested
    return max(0, min(8, usable_cores() - 1))


def usable_cores() -> int:
    """Cores this process may use: CPU affinity, lowered by a cgroup v2 CPU quota when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


class CLIPZeroShotTaskPool:
    """Zero-shot CLIP classification on each task of a suite: accuracy and cross-entropy per task.

    One class serves every CLIP suite: ``name`` (the registered suite name, e.g. ``clip-vit-b32-ta8``)
    selects the backbone and the tasks from :data:`fusionbench_vision.suites.SUITES`.
    """

    options = _COMMON

    def __init__(self, name: str, examples: int = 0, batch_size: int = 128, num_workers: int = -1,
                 device: str = "auto", precision: str = "fp32", device_cache_gb: float = 8.0, seed: int = 0,
                 pretrained: str = "", tasks: list | None = None, classnames: str = "fixed",
                 corruption: str = "clean", severity: int = 3, corruption_source: str = "hub"):
        self.suite: SuiteSpec = get_suite(name, "task pools")
        self.name = name
        owner = f"task pool '{self.name}'"
        self._tasks = [str(t) for t in (tasks or [])] or self.suite.tasks
        for task in self._tasks:
            if task not in self.suite.tasks:
                raise UnknownComponentError("task", task, self.suite.tasks, owner=owner)
        if batch_size < 1:
            raise ConfigError(f"option 'batch_size' of {owner} must be at least 1, got {batch_size}")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.num_workers = auto_workers(num_workers)
        self.device, self.precision = device, precision
        self.pretrained_id = pretrained or self.suite.pretrained_id
        if classnames not in CLASSNAME_SETS:
            raise ConfigError(f"option 'classnames' of {owner} must be one of {', '.join(CLASSNAME_SETS)}, "
                              f"got '{classnames}'")
        self.classnames = classnames
        self.corruptions = ([None, *CORRUPTIONS] if corruption == "all" else
                            [None if corruption == "clean" else corruption])
        self.severity = severity
        if corruption_source not in CORRUPTION_SOURCES:
            raise ConfigError(f"option 'corruption_source' of {owner} must be one of {', '.join(CORRUPTION_SOURCES)}, "
                              f"got '{corruption_source}'")
        self.corruption_source = corruption_source
        self.device_cache_bytes = int(device_cache_gb * 1e9)
        self._resident: dict[tuple[str, str | None], Any] = {}
        self._classifier: Any = None

    def fingerprint(self) -> str:
        """Content hash of what is read (``fusionbench_core.experiments.fingerprint``): the CLIP model whose
        text tower makes the heads, and each task's dataset."""
        from fusionbench_core.experiments.fingerprint import inputs_fingerprint

        datasets = dict.fromkeys(get_task(t, self.classnames).dataset for t in self._tasks)
        return inputs_fingerprint(models=[self.pretrained_id], datasets=list(datasets))

    @property
    def task_names(self) -> list[str]:
        """Report rows: the tasks, and for robustness pools ``task/corruption`` too."""
        return [task if c is None else f"{task}/{c}" for c in self.corruptions for task in self._tasks]

    @property
    def classifier(self) -> Any:
        """The shared :class:`~fusionbench_vision.zeroshot.ZeroShotClassifier` (built on first use)."""
        if self._classifier is None:
            from .zeroshot import ZeroShotClassifier

            self._classifier = ZeroShotClassifier(self.pretrained_id, device=self.device, precision=self.precision)
        return self._classifier

    def images(self, task: str, corruption: str | None = None) -> Any:
        """The cached test images of ``task``: clean, or corrupted (upstream's hub split, or generated)."""
        from .data import cached_images

        spec = get_task(task, self.classnames)
        if corruption is not None and self.corruption_source == "hub":
            return cached_images(spec, corruption, self.classifier.processing, examples=self.examples, seed=self.seed,
                                 num_workers=self.num_workers)
        return cached_images(spec, spec.split, self.classifier.processing, examples=self.examples, seed=self.seed,
                             num_workers=self.num_workers, corruption=corruption, severity=self.severity)

    def evaluate(self, model: Any) -> EvaluationReport:
        """Accuracy, loss and per-example predictions of vision tower ``model`` (or a CLIP model's) on every task."""
        vision = getattr(model, "vision_model", model)
        classifier = self.classifier
        previous = next(vision.parameters()).device
        was_training = vision.training
        vision.to(classifier.device).eval()
        report = EvaluationReport()
        try:
            for corruption in self.corruptions:
                for task in self._tasks:
                    row = task if corruption is None else f"{task}/{corruption}"
                    images = self.images(task, corruption)
                    report.tasks[row], report.predictions[row] = classifier.score(
                        vision, get_task(task, self.classnames), images, batch_size=self.batch_size,
                        num_workers=self.num_workers, resident=self._device_copy(task, corruption, images),
                    )
                    if self.suite.unseen:  # the report's average of each is then over seen / unseen tasks alone
                        group = "unseen" if task in self.suite.unseen else "seen"
                        report.tasks[row][f"{group}_accuracy"] = report.tasks[row]["accuracy"]
        finally:
            vision.to(previous).train(was_training)
        return report

    def _device_copy(self, task: str, corruption: str | None, images: Any) -> Any:
        """The task's images resident on the GPU while they fit ``device_cache_gb`` (None on CPU or when full)."""
        key = (task, corruption)
        if key in self._resident:
            return self._resident[key]
        classifier = self.classifier
        if classifier.device.type != "cuda":
            return None
        used = sum(pair[0].numel() for pair in self._resident.values())
        if used + images.images_path.stat().st_size > self.device_cache_bytes:
            return None
        self._resident[key] = classifier.upload(images)
        return self._resident[key]


class CLIPRobustnessTaskPool(CLIPZeroShotTaskPool):
    """Zero-shot CLIP classification on clean and corrupted test sets.

    By default the corrupted sets are upstream's pre-corrupted hub splits (``corruption_source=hub``);
    ``generated`` corrupts the raw clean test images on the fly with upstream's generator, before the
    preprocessing (seeded per image, deterministic).
    """

    options = _COMMON + _ROBUSTNESS

    def __init__(self, name: str, corruption: str = "all", severity: int = 3, corruption_source: str = "hub",
                 **options: Any):
        super().__init__(name, corruption=corruption, severity=severity, corruption_source=corruption_source,
                         **options)
        if not self.suite.robustness:
            raise ConfigError(f"task pool '{name}' is not a robustness suite: use CLIPZeroShotTaskPool")

