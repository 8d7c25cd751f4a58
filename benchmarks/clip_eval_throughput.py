"""CLIP evaluation throughput: the full task-pool pipeline against the bare forward pass.

Builds, in a temporary directory, a random-weight CLIP model at the real ViT-B/32 size (no download)
under the hub id ``openai/clip-vit-base-patch32`` and a synthetic EuroSAT-shaped test set of
``--images`` images, then times, in the same process and on the same batches:

* **pipeline**: ``CLIPZeroShotTaskPool("clip-vit-b32-ta8", tasks=["eurosat"]).evaluate(model)`` in steady state (image
  cache and head already built; on a GPU the task's uint8 images stay on the device between
  evaluations): uint8 → normalised pixels on the device, autocast forward, projection, zero-shot
  logits, accuracy and loss;
* **streaming**: the same with ``device_cache_gb=0``: every evaluation reads the on-disk cache through
  loader workers and copies it to the device;
* **bare**: ``model(pixel_values=x).pooler_output`` under the same autocast, over the same
  batches already normalised and resident on the device.

Prints images/s of both and their ratio (pipeline time / bare time; target ≤ 1.3), then one JSON
line. The first (cold) evaluation, which preprocesses the images and builds the head, is reported
separately.

    python benchmarks/clip_eval_throughput.py                 # B/32, GPU if present
    python benchmarks/clip_eval_throughput.py --arch tiny --images 256 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


class InMemoryImages:
    """The slice of the ``datasets.Dataset`` interface that preprocessing reads: random RGB images, labels."""

    column_names = ["image", "label"]

    def __init__(self, count: int, side: int, classes: int, seed: int = 0):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.pixels = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
        self.labels = rng.integers(0, classes, size=count)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        return {"image": Image.fromarray(self.pixels[i]), "label": int(self.labels[i])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["b32", "tiny"], default="b32")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    work = Path(tempfile.mkdtemp(prefix="clip-bench-"))
    os.environ.update({"FUSIONBENCH_MODEL_ROOT": str(work / "models"), "FUSIONBENCH_DATA_ROOT": str(work / "data"),
                       "FUSIONBENCH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1", "FUSIONBENCH_PROGRESS": "0"})

    from fusionbench_vision import testing
    from fusionbench_vision.suites import SUITES
    from fusionbench_vision.taskpool import CLIPZeroShotTaskPool

    suite = SUITES["clip-vit-b32-ta8"]
    vision, text, proj = ((testing.B32_VISION, testing.B32_TEXT, 512) if args.arch == "b32"
                          else (testing.TINY_VISION, testing.TINY_TEXT, 16))
    t0 = time.perf_counter()
    testing.save_pretrained_clip(work / "models" / suite.pretrained_id, vision=vision, text=text, projection_dim=proj)
    # The test set is held in memory (the GPU machine has no `datasets`); preprocessing, caching and
    # evaluation run the package's own code on it.
    from fusionbench_vision import data as data_module

    side = 96 if args.arch == "b32" else 40
    test_set = InMemoryImages(args.images, side, classes=10)
    data_module.load_split = lambda spec, split: test_set
    setup_s = time.perf_counter() - t0

    pool = CLIPZeroShotTaskPool("clip-vit-b32-ta8", tasks=["eurosat"], batch_size=args.batch_size, num_workers=args.workers,
                                 device=args.device, precision=args.precision)
    streaming = CLIPZeroShotTaskPool("clip-vit-b32-ta8", tasks=["eurosat"], batch_size=args.batch_size, num_workers=args.workers,
                                      device=args.device, precision=args.precision, device_cache_gb=0)
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(str(work / "models" / suite.pretrained_id)).eval()
    classifier = pool.classifier
    device = classifier.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The model sits on the device already, as in a sweep; evaluate() would otherwise move it there and back.
    model.to(device)
    t0 = time.perf_counter()
    cold = pool.evaluate(model).tasks["eurosat"]
    cold_s = time.perf_counter() - t0

    def timed(taskpool) -> float:
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            taskpool.evaluate(model)
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    pipeline_s = timed(pool)
    streaming._classifier = pool.classifier  # same heads and processing; only the image path differs
    streaming_s = timed(streaming)

    images, _ = pool.images("eurosat").load()
    batches = [classifier.pixels(torch.from_numpy(images[i : i + args.batch_size].copy()))
               for i in range(0, len(images), args.batch_size)]
    model.to(device)
    context = (lambda: torch.autocast(device.type, dtype=classifier.autocast)) if classifier.autocast else nullcontext
    with torch.inference_mode():
        for x in batches[:2]:
            with context():
                model(pixel_values=x).pooler_output
        bare_times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            for x in batches:
                with context():
                    model(pixel_values=x).pooler_output
            sync()
            bare_times.append(time.perf_counter() - t0)

    n = len(images)
    bare_s = min(bare_times)
    result = {
        "arch": args.arch, "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "precision": str(classifier.autocast).removeprefix("torch.") if classifier.autocast else "fp32",
        "images": n, "batch_size": args.batch_size, "workers": pool.num_workers,
        "pipeline_images_per_s": round(n / pipeline_s, 1), "bare_images_per_s": round(n / bare_s, 1),
        "ratio": round(pipeline_s / bare_s, 3),
        "streaming_images_per_s": round(n / streaming_s, 1), "streaming_ratio": round(streaming_s / bare_s, 3),
        "cold_first_eval_s": round(cold_s, 2), "setup_s": round(setup_s, 1),
        "accuracy": cold["accuracy"], "torch": torch.__version__,
    }
    print(f"pipeline: {result['pipeline_images_per_s']} images/s  bare forward: {result['bare_images_per_s']} images/s  "
          f"ratio (pipeline/bare time): {result['ratio']}")
    print(f"streaming from the disk cache every evaluation: {result['streaming_images_per_s']} images/s, "
          f"ratio {result['streaming_ratio']}; first cold evaluation {result['cold_first_eval_s']} s")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
