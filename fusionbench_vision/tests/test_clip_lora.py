"""CLIP LoRA-16 experts: adapters in upstream's layout load where upstream trained them, on any transformers.

Upstream trains with PEFT on ``CLIPVisionModel.vision_model``; its files hold
``base_model.model.encoder.layers.N.self_attn.{q,v}_proj.lora_{A,B}.weight``. Applied to the wrong
module, PEFT only warns and every expert silently equals the pretrained model: these tests check the
merged weights against ΔW = (α/r)·B·A computed from the files.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402

from fusionbench_core.errors import ModelLoadError  # noqa: E402
from fusionbench_core.protocols import PRETRAINED  # noqa: E402
from fusionbench_vision.suites import SUITES  # noqa: E402

SUITE = SUITES["clip-vit-b16-ta8-lora16"]
UPSTREAM_KEY = re.compile(r"^base_model\.model\.encoder\.layers\.\d+\.self_attn\.[qv]_proj\.lora_[AB]\.weight$")


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory):
    from fusionbench_vision.testing import build_model_root

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip-lora") / "models"
    build_model_root(root, SUITE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSIONBENCH_MODEL_ROOT", str(root))
        patch.setenv("FUSIONBENCH_CACHE", str(root.parent / "cache"))
        yield root


def _pool():
    from fusionbench_vision.modelpool import CLIPVisionModelPool

    return CLIPVisionModelPool(SUITE.name)


def _expected(root, task: str, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pretrained q/v weights plus (α/r)·B·A from the adapter files, under the tower's own names."""
    adapter = root / SUITE.expert_id(task)
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    out = {}
    for name, a in tensors.items():
        if name.endswith(".lora_A.weight"):
            module = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = tensors[name.replace("lora_A", "lora_B")]
            out[f"{module}.weight"] = base[f"{module}.weight"].double() + scale * (b.double() @ a.double())
    return out


def _tower_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A vision tower's state under the transformer's own names (``encoder.…``), whatever the nesting."""
    return getattr(model, "vision_model", model).state_dict()


def test_the_fixture_adapters_are_in_upstreams_layout(lora_root):
    adapter = lora_root / SUITE.expert_id("dtd")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (16, 32, ["q_proj", "v_proj"])
    keys = list(load_file(str(adapter / "adapter_model.safetensors")))
    assert keys and all(UPSTREAM_KEY.match(k) for k in keys), keys[:3]


def test_a_lora_expert_is_the_pretrained_tower_plus_scaled_b_a(lora_root):
    pool = _pool()
    base = _tower_state(pool.load_model(PRETRAINED))
    for task in ("dtd", "mnist"):
        merged = _tower_state(pool.load_model(task))
        expected = _expected(lora_root, task, base)
        assert len(expected) == 2 * 2  # two layers × (q, v)
        for key, value in expected.items():
            assert not torch.allclose(merged[key].double(), base[key].double(), atol=1e-4), f"{task}: {key} unchanged"
            torch.testing.assert_close(merged[key].double(), value, atol=1e-6, rtol=0)
    tensors = pool.tensors("dtd")
    key = "vision_model.encoder.layers.1.self_attn.v_proj.weight"
    expected = _expected(lora_root, "dtd", base)[key.removeprefix("vision_model.")]
    torch.testing.assert_close(tensors.get(key).double(), expected, atol=1e-6, rtol=0)


class NestedVisionModel(torch.nn.Module):
    """transformers 4's CLIPVisionModel layout: the transformer sits under ``.vision_model``."""

    base_model_prefix = "clip"

    def __init__(self, tower: torch.nn.Module):
        super().__init__()
        self.config = tower.config
        self.vision_model = tower

    def forward(self, **inputs):
        return self.vision_model(**inputs)


def test_adapters_load_on_the_transformers_4_layout_too(lora_root):
    pool = _pool()
    if hasattr(pool.load_model(PRETRAINED), "vision_model"):
        pytest.skip("transformers 4 nests the tower itself: every other test here runs on that layout")
    pool._pretrained = NestedVisionModel(pool.load_model(PRETRAINED))
    base = _tower_state(pool.load_model(PRETRAINED))
    merged = pool.load_model("gtsrb")
    assert isinstance(merged, NestedVisionModel)
    for key, value in _expected(lora_root, "gtsrb", base).items():
        assert not torch.allclose(_tower_state(merged)[key], base[key], atol=1e-4), f"{key} = pretrained"
        torch.testing.assert_close(_tower_state(merged)[key].double(), value, atol=1e-6, rtol=0)
    keys = pool.tensors("gtsrb").keys()
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert not any(k.startswith("vision_model.vision_model.") for k in keys)


def test_an_adapter_that_fits_no_module_is_an_error_not_the_pretrained_model(lora_root, tmp_path, monkeypatch):
    """An adapter saved on the outer module of transformers 4 (``…model.vision_model.encoder…``) fits nowhere."""
    source = lora_root / SUITE.expert_id("svhn")
    target = tmp_path / SUITE.expert_id("svhn")
    shutil.copytree(source, target)
    tensors = load_file(str(source / "adapter_model.safetensors"))
    moved = {k.replace("base_model.model.", "base_model.model.vision_model."): v for k, v in tensors.items()}
    save_file(moved, str(target / "adapter_model.safetensors"))
    monkeypatch.setenv("FUSIONBENCH_MODEL_ROOT", f"{tmp_path}:{lora_root}")
    misfit = r"does not fit the CLIP vision tower: its tensor 'base_model\.model\.vision_model\."
    with pytest.raises(ModelLoadError, match=misfit):
        _pool().load_model("svhn")


def test_the_declared_transformers_range_admits_the_installed_version():
    import importlib.metadata
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    requirements = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    (transformers,) = [r for r in requirements if r.name == "transformers"]
    assert transformers.specifier.contains("4.57.1") and transformers.specifier.contains("5.24.0")
    assert not transformers.specifier.contains("4.40.0") and not transformers.specifier.contains("6.0.0")
    assert transformers.specifier.contains(importlib.metadata.version("transformers"))
