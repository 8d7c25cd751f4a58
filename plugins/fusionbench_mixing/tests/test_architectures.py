"""The mixing methods on transformer backbones: the CLIP vision pool with its test fixtures, and BERT.

The BERT pool here is a stand-in declaring what the mini-text pool is to declare (its backbone is a
``BertModel``), so the methods are checked on that architecture before the suite declares it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fusionbench_core import PRETRAINED, DataRequest
from fusionbench_core.engine.sources import StateDictSource
from fusionbench_core.protocols import ArchitectureSpec
from fusionbench_core.testing import invoke_fb

METHODS = {
    "smile": ["-s", "expert_rank=4", "-s", "gate_rank=2"],
    "wemoe": ["-s", "steps=1", "-s", "device=cpu"],
    "depth_upscaling": [],
    "moe_upcycling": [],
    "rankone_moe": ["-s", "steps=1", "-s", "device=cpu"],
    "sparse_wemoe": ["-s", "steps=1", "-s", "device=cpu"],
}
TASKS = ["-s", "modelpool.tasks=mnist,svhn", "-s", "taskpool.tasks=mnist,svhn", "-s", "taskpool.num_workers=0"]


@pytest.fixture(scope="module")
def clip_roots(tmp_path_factory):
    """Tiny random CLIP models and images under the ViT-B/32 TA8 ids; the environment points the suite at them."""
    pytest.importorskip("fusionbench_vision")
    from fusionbench_vision.suites import SUITES, TA8
    from fusionbench_vision.testing import build_data_root, build_model_root

    base = tmp_path_factory.mktemp("mixing-clip")
    build_model_root(base / "models", SUITES["clip-vit-b32-ta8"])
    build_data_root(base / "data", TA8)
    patch = pytest.MonkeyPatch()
    patch.setenv("FUSIONBENCH_MODEL_ROOT", str(base / "models"))
    patch.setenv("FUSIONBENCH_DATA_ROOT", str(base / "data"))
    yield base
    patch.undo()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_saves_and_reloads_on_the_clip_vision_pool(name, clip_roots, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(clip_roots / "cache"))
    run = invoke_fb("run", "-m", name, "-p", "clip-vit-b32-ta8", *TASKS, "-o", str(tmp_path), "--save-model",
                    "--json", *METHODS[name])
    assert run.exit_code == 0, run.stderr
    evaluated = invoke_fb("eval", str(tmp_path / "model"), "-p", "clip-vit-b32-ta8", *TASKS, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert next(iter(evaluated.json.values()))["tasks"] == run.json["tasks"]
    assert run.json["cost"]["parameters"] >= run.json["cost"]["dense_parameters"]


class BertPool:
    """A data model pool of random ``BertModel`` backbones: the pretrained one and two perturbed copies."""

    name = "bert-stand-in"

    def __init__(self):
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, vocab_size=40, max_position_embeddings=16,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.pretrained = transformers.BertModel(config).eval()
            self.models = {}
            for task in ("a", "b"):
                model = copy.deepcopy(self.pretrained)
                with torch.no_grad():
                    for param in model.parameters():
                        param.add_(torch.randn_like(param) * 0.02)
                self.models[task] = model
            self.heads = {task: torch.nn.Linear(16, 3) for task in self.models}
            self.inputs = torch.randint(0, 40, (6, 8))
        for head in self.heads.values():
            head.requires_grad_(False)

    model_names = property(lambda self: list(self.models))
    has_pretrained = True

    def load_model(self, name):
        return copy.deepcopy(self.pretrained if name == PRETRAINED else self.models[name])

    def tensors(self, name):
        return StateDictSource(self.load_model(name).state_dict())

    def build_model(self, state):
        model = copy.deepcopy(self.pretrained)
        model.load_state_dict(dict(state))
        return model

    def architecture(self):
        return ArchitectureSpec(layers="encoder.layer",
                                mlps=("encoder.layer.*.intermediate", "encoder.layer.*.output.dense"),
                                linear_types=("Linear",))

    def batches(self, task, request: DataRequest, *, batch_size=32):
        for start in range(0, len(self.inputs), batch_size):
            yield self.inputs[start:start + batch_size], None

    def logits(self, task, model, inputs):
        return self.heads[task](model(input_ids=inputs).last_hidden_state.mean(dim=1))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_saves_and_reloads_on_a_bert_backbone(name, tmp_path):
    from fusionbench_core.plugins import get_host

    cls = get_host().registry("method").entry(name).load()
    settings = {key.split("=")[0]: key.split("=")[1] for key in METHODS[name][1::2]}
    pool = BertPool()
    method = cls(**settings)
    fused = method.run(pool)
    method.save_fused(fused, tmp_path)
    loaded = cls.load_fused(BertPool(), tmp_path)
    with torch.no_grad():
        expected = fused(input_ids=pool.inputs).last_hidden_state
        assert torch.equal(loaded(input_ids=pool.inputs).last_hidden_state, expected)
    if name == "depth_upscaling":
        assert len(fused.encoder.layer) == 4  # SOLAR's split of 2 layers (m = 2 // 4 = 0): both layers, twice
