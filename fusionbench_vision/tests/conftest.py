"""Fixtures of the CLIP suite tests: a tiny local model root, data root and cache, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def clip_roots(tmp_path_factory):
    """Tiny random CLIP models (ViT-B/32 TA8 ids) and datasets; env points the suites at them.

    Yields the (model_root, data_root, cache) paths. The environment is restored afterwards.
    """
    import torch

    from fusionbench_vision.suites import SUITES, TA8
    from fusionbench_vision.testing import build_data_root, build_model_root

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("clip-suite")
    model_root, data_root, cache = base / "models", base / "data", base / "cache"
    build_model_root(model_root, SUITES["clip-vit-b32-ta8"])
    build_data_root(data_root, TA8)
    patch = pytest.MonkeyPatch()
    patch.setenv("FUSIONBENCH_MODEL_ROOT", str(model_root))
    patch.setenv("FUSIONBENCH_DATA_ROOT", str(data_root))
    patch.setenv("FUSIONBENCH_CACHE", str(cache))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_DATASETS_OFFLINE", "1")
    yield model_root, data_root, cache
    patch.undo()


@pytest.fixture(scope="session")
def b32_ta8_run(clip_roots):
    """``fb run --method task_arithmetic --modelpool clip-vit-b32-ta8 --taskpool clip-vit-b32-ta8 --json``, once."""
    from fusionbench_core.testing import invoke_fb

    out = clip_roots[0].parent / "run"
    return invoke_fb("run", "--method", "task_arithmetic", "--modelpool", "clip-vit-b32-ta8",
                     "--taskpool", "clip-vit-b32-ta8", "-s", "taskpool.num_workers=0", "-o", str(out), "--json")


def head_files(cache: Path) -> list[Path]:
    """Cached zero-shot heads under a FusionBench cache."""
    return sorted((cache / "clip-heads").glob("*/*.safetensors"))
