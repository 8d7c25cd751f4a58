"""CLIP suites key their runs on the bytes of the checkpoints (#24): other weights under the same hub ids
are another cell; the same bytes elsewhere, written at other times, are the same cell."""

from __future__ import annotations

import os
import shutil

from fusionbench_core.config import ComponentSpec, RunConfig
from fusionbench_core.experiments.sweep import run_key
from fusionbench_core.plugins import get_host

SUITE = "clip-vit-b32-ta8"


def key():
    config = RunConfig(ComponentSpec("task_arithmetic", {}), ComponentSpec(SUITE, {}),
                       ComponentSpec(SUITE, {"num_workers": 0}), 0)
    return run_key(config, get_host())


def test_clip_cells_are_keyed_on_the_weights(clip_roots, tmp_path, monkeypatch):
    from fusionbench_vision.suites import SUITES
    from fusionbench_vision.testing import save_expert

    models = tmp_path / "models"
    shutil.copytree(clip_roots[0], models)
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(models))
    first, payload = key()
    assert payload["inputs"]["modelpool"] and payload["inputs"]["taskpool"]

    moved = tmp_path / "moved"
    shutil.copytree(models, moved)
    for path in moved.rglob("*"):
        os.utime(path, (1, 1))
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", str(moved))
    assert key()[0] == first

    # A random stand-in replaced by another checkpoint under the same id: another cell.
    from transformers import CLIPModel

    suite = SUITES[SUITE]
    pretrained = CLIPModel.from_pretrained(str(moved / suite.pretrained_id))
    save_expert(moved / suite.expert_id("mnist"), pretrained, seed=99)
    changed, changed_payload = key()
    assert changed != first
    assert changed_payload["inputs"]["modelpool"] != payload["inputs"]["modelpool"]
    assert changed_payload["inputs"]["taskpool"] == payload["inputs"]["taskpool"]  # heads and data unchanged
