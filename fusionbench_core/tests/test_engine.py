"""The streaming engine: sources, LoRA inputs, selection, blocks, writer and ``fb merge``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fusionbench_core.engine.lora import LoraSource
from fusionbench_core.engine.selection import StreamingTopK, top_k_mask
from fusionbench_core.engine.sources import PickleSource, SafetensorsSource, StateDictSource, open_source
from fusionbench_core.engine.tensorwise import TensorwiseAlgorithm, merge_sources, plan_blocks
from fusionbench_core.engine.writer import SafetensorsWriter, StateDictSink
from fusionbench_core.errors import ModelLoadError, ShapeMismatchError


def state(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(50, 8, generator=gen).to(dtype),
        "layer.weight": torch.randn(8, 8, generator=gen).to(dtype),
        "layer.bias": torch.randn(8, generator=gen).to(dtype),
        "scale": torch.tensor(1.5 + seed, dtype=dtype),
        "position_ids": torch.arange(6),
    }


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    source = open_source(path)
    return {k: source.get(k) for k in source.keys()}


class Mean(TensorwiseAlgorithm):
    """A test method: the mean, row-chunkable."""

    name = "test_mean"
    needs_pretrained = False
    chunkable = True

    def merge_tensor(self, key, pretrained, models):
        seen = list(models)
        self.blocks.append((key, self.block.start, self.block.stop))
        return torch.stack(seen).mean(0)


# -- sources -----------------------------------------------------------------------------------


def test_safetensors_source_reads_what_safetensors_wrote_and_row_blocks(tmp_path):
    tensors = state(0, torch.bfloat16)
    save_file(tensors, str(tmp_path / "m.safetensors"))
    source = open_source(tmp_path / "m.safetensors")
    assert isinstance(source, SafetensorsSource)
    assert set(source.keys()) == set(tensors)
    for key, tensor in tensors.items():
        assert source.info(key).shape == tuple(tensor.shape)
        assert source.info(key).dtype == str(tensor.dtype).removeprefix("torch.")
        assert torch.equal(source.get(key), tensor)
    assert torch.equal(source.get_rows("embed.weight", 7, 19), tensors["embed.weight"][7:19])


def test_sharded_index_hf_directory_and_pickle(tmp_path):
    tensors = state(1)
    first = {k: v for k, v in tensors.items() if k.startswith("embed")}
    second = {k: v for k, v in tensors.items() if not k.startswith("embed")}
    save_file(first, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(second, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first} | {
        k: "model-00002-of-00002.safetensors" for k in second}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for path in (tmp_path, tmp_path / "model.safetensors.index.json"):
        loaded = load_dir(path)
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    torch.save(tensors, tmp_path / "sd.bin")
    pickle = open_source(tmp_path / "sd.bin")
    assert isinstance(pickle, PickleSource) and torch.equal(pickle.get("layer.weight"), tensors["layer.weight"])


def test_unreadable_inputs_raise_one_line_errors(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        open_source(tmp_path / "bad.safetensors")
    with pytest.raises(ModelLoadError, match="no such file"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        open_source(tmp_path / "empty")


# -- LoRA --------------------------------------------------------------------------------------


def write_adapter(path: Path, tensors: dict[str, torch.Tensor], **config) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def test_lora_source_adds_scaled_ba_per_tensor(tmp_path):
    base = StateDictSource(state(0))
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 8, generator=gen), torch.randn(8, 2, generator=gen)
    head = torch.randn(8, generator=gen)
    adapter = write_adapter(tmp_path / "lora", {
        "base_model.model.layer.lora_A.weight": a, "base_model.model.layer.lora_B.weight": b,
        "base_model.model.layer.bias": head}, r=2, lora_alpha=6)
    lora = open_source(adapter, base=base)
    assert isinstance(lora, LoraSource)
    expected = state(0)["layer.weight"] + 3.0 * (b @ a)
    assert torch.allclose(lora.get("layer.weight"), expected, atol=1e-6)
    assert torch.allclose(lora.get_rows("layer.weight", 2, 5), expected[2:5], atol=1e-6)
    assert torch.equal(lora.get("layer.bias"), head)  # modules_to_save-style replacement
    assert torch.equal(lora.get("embed.weight"), state(0)["embed.weight"])
    rs = LoraSource(base, write_adapter(tmp_path / "rs", {
        "base_model.model.layer.lora_A.weight": a, "base_model.model.layer.lora_B.weight": b},
        r=2, lora_alpha=6, use_rslora=True))
    assert rs.scale("layer.weight") == pytest.approx(6 / math.sqrt(2))
    fan = LoraSource(base, write_adapter(tmp_path / "fan", {
        "base_model.model.layer.lora_A.weight": a, "base_model.model.layer.lora_B.weight": b},
        r=2, lora_alpha=2, fan_in_fan_out=True))
    assert torch.allclose(fan.get("layer.weight"), state(0)["layer.weight"] + (b @ a).T, atol=1e-6)
    with pytest.raises(ModelLoadError, match="needs|base model"):
        open_source(adapter)
    bad = write_adapter(tmp_path / "bad", {"base_model.model.nothing.lora_A.weight": a,
                                           "base_model.model.nothing.lora_B.weight": b}, r=2, lora_alpha=2)
    with pytest.raises(ModelLoadError, match="nothing"):
        open_source(bad, base=base)


def test_lora_source_matches_peft_merge_and_unload(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    config = peft.LoraConfig(r=3, lora_alpha=5, target_modules=["0", "2"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config)
    wrapped.save_pretrained(str(tmp_path / "adapter"))
    merged = wrapped.merge_and_unload().state_dict()
    source = open_source(tmp_path / "adapter", base=StateDictSource(base_state))
    for key, value in merged.items():
        assert torch.allclose(source.get(key).float(), value, atol=1e-5), key


# -- selection ---------------------------------------------------------------------------------


def test_top_k_mask_keeps_exactly_k_with_ties_first_in_order():
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 0.0])
    assert top_k_mask(values, 2).tolist() == [True, False, True, False, False, False]
    assert top_k_mask(values, 4).tolist() == [True, False, True, True, True, False]
    assert top_k_mask(values, 0).sum() == 0 and top_k_mask(values, 6).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streaming_top_k_equals_a_full_sort_over_blocks(dtype):
    gen = torch.Generator().manual_seed(0)
    blocks = [torch.randn(n, generator=gen, dtype=dtype).abs() for n in (1000, 37, 4096, 1)]
    blocks.append(torch.randint(0, 4, (3000,), generator=gen).to(dtype))  # many exact ties
    everything = torch.cat(blocks)
    for k in (0, 1, 17, 1234, everything.numel() // 5, everything.numel() - 3, everything.numel()):
        selector = StreamingTopK(k)
        for block in blocks:
            selector.observe(block)
        for block in blocks:
            selector.refine(block)
        keeper = selector.keeper()
        mask = torch.cat([keeper(block) for block in blocks])
        assert int(mask.sum()) == k
        assert torch.equal(mask, top_k_mask(everything, k))


# -- engine --------------------------------------------------------------------------------------


def test_plan_blocks_cover_rows_within_the_budget():
    blocks = plan_blocks("w", (10, 4), 12)
    assert [(b.start, b.stop) for b in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert blocks[1].offset == 12 and not blocks[1].whole
    assert [(b.start, b.stop) for b in plan_blocks("s", (), 1)] == [(0, 1)]
    assert plan_blocks("w", (10, 4), None)[0].whole


def test_row_blocks_give_the_same_result_as_whole_tensors():
    models = [StateDictSource(state(i)) for i in range(3)]
    method = Mean()
    method.blocks = []
    chunked, whole = StateDictSink(), StateDictSink()
    merge_sources(method, None, models, sink=chunked, chunk_elements=64)
    assert ("embed.weight", 8, 16) in method.blocks  # 64 elements = 8 rows of 8
    method.blocks = []
    merge_sources(method, None, models, sink=whole, chunk_elements=None, prefetch=False)
    expected = {k: torch.stack([state(i)[k] for i in range(3)]).mean(0) for k in state(0) if k != "position_ids"}
    for key, value in expected.items():
        assert torch.equal(chunked.state[key], whole.state[key])
        assert torch.allclose(chunked.state[key], value)
    assert torch.equal(chunked.state["position_ids"], torch.arange(6))


def test_mismatched_inputs_raise_naming_the_tensor():
    other = state(1)
    other["layer.weight"] = torch.zeros(8, 9)
    with pytest.raises(ShapeMismatchError, match="layer.weight"):
        merge_sources(Mean(), None, [StateDictSource(state(0)), StateDictSource(other)], sink=StateDictSink())
    del other["layer.weight"]
    with pytest.raises(ShapeMismatchError, match="layer.weight"):
        merge_sources(Mean(), None, [StateDictSource(state(0)), StateDictSource(other)], sink=StateDictSink())


def test_writer_shards_align_and_round_trip(tmp_path):
    tensors = state(2)
    tensors["half"] = torch.randn(3, 5).to(torch.bfloat16)
    plan = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    writer = SafetensorsWriter(tmp_path, plan, max_shard_bytes=1000, metadata={"note": "x"})
    for key, value in reversed(tensors.items()):
        if key == "embed.weight":
            writer.write_rows(key, 0, value[:20], tuple(value.shape))
            writer.write_rows(key, 20, value[20:], tuple(value.shape))
        else:
            writer.write(key, value)
    writer.patch("layer.bias", torch.tensor([0, 7]), torch.tensor([-1.0, -2.0]))
    writer.close()
    tensors["layer.bias"][[0, 7]] = torch.tensor([-1.0, -2.0])
    assert len(writer.files) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    for file in writer.files:
        with safe_open(str(file), framework="pt") as handle:
            assert handle.metadata()["format"] == "pt"
            for key in handle.keys():
                assert torch.equal(handle.get_tensor(key), tensors[key])
    loaded = load_dir(tmp_path)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


# -- fb merge ----------------------------------------------------------------------------------


def save_model_dir(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "toy"}))
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.fixture
def model_dirs(tmp_path):
    base = save_model_dir(tmp_path / "base", state(0))
    models = [save_model_dir(tmp_path / f"m{i}", state(i + 1)) for i in range(3)]
    return base, models


def test_fb_merge_task_arithmetic_writes_an_hf_directory(fb_cli, model_dirs, tmp_path):
    base, models = model_dirs
    out = tmp_path / "out"
    args = ["merge", "task_arithmetic", "--pretrained", str(base), "-s", "scaling_factor=0.5", "-o", str(out),
            "--shard-size", "1KB", "--json"]
    for model in models:
        args += ["--model", str(model)]
    result = fb_cli(*args)
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = result.json
    assert summary["shards"] > 1 and summary["tensors"] == 5
    merged = load_dir(out)
    theta0 = state(0)
    for key in ("embed.weight", "layer.weight", "layer.bias", "scale"):
        expected = theta0[key] + 0.5 * sum(state(i + 1)[key] - theta0[key] for i in range(3))
        assert torch.allclose(merged[key], expected, atol=1e-5)
    assert torch.equal(merged["position_ids"], theta0["position_ids"])
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    card = (out / "README.md").read_text()
    assert "task_arithmetic" in card and "scaling_factor" in card and str(models[2]) in card
    hashes = [entry["hash"] for entry in summary["inputs"]]
    assert len(set(hashes)) == 4 and all(h in card for h in hashes)
    assert not list(tmp_path.glob(".out.partial*"))
    again = fb_cli(*args)
    assert again.json["inputs"] == summary["inputs"]  # content hashes are stable


def test_fb_merge_lora_adapters_and_dtype(fb_cli, tmp_path):
    base = save_model_dir(tmp_path / "base", state(0))
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 8, generator=gen), torch.randn(8, 2, generator=gen)
    adapter = write_adapter(tmp_path / "adapter", {"base_model.model.layer.lora_A.weight": a,
                                                    "base_model.model.layer.lora_B.weight": b}, r=2, lora_alpha=2)
    out = tmp_path / "out"
    result = fb_cli("merge", "task_arithmetic", "--pretrained", str(base), "--model", str(adapter),
                    "-s", "scaling_factor=1", "--dtype", "bfloat16", "-o", str(out))
    assert result.exit_code == 0, result.stdout + result.stderr
    merged = load_dir(out)
    assert merged["layer.weight"].dtype == torch.bfloat16
    assert torch.equal(merged["layer.weight"], (state(0)["layer.weight"] + b @ a).to(torch.bfloat16))
    assert merged["position_ids"].dtype == torch.int64
    missing = fb_cli("merge", "task_arithmetic", "--model", str(adapter), "-o", str(tmp_path / "x"))
    assert missing.exit_code == 1 and "--pretrained" in (missing.stdout + missing.stderr)


def test_fb_merge_bad_input_fails_with_one_line(fb_cli, model_dirs, tmp_path):
    base, models = model_dirs
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"garbage!")
    result = fb_cli("merge", "task_arithmetic", "--pretrained", str(base), "--model", str(bad), "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "bad" in (result.stdout + result.stderr) and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "o").exists()


def test_fb_merge_from_a_pool_file_equals_fb_run_in_process(fb_cli, tiny_modelpool, tmp_path):
    pool = tiny_modelpool(3, 0)
    paths = {}
    for name in ["_pretrained_", *pool.model_names]:
        source = pool.tensors(name)
        paths[name] = save_model_dir(tmp_path / name, {k: source.get(k) for k in source.keys()})
    (tmp_path / "pool.yaml").write_text(json.dumps({"pretrained": "_pretrained_", "models": pool.model_names}))
    out = tmp_path / "merged"
    result = fb_cli("merge", "ties", "-p", str(tmp_path / "pool.yaml"), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    from fusionbench_core.plugins import get_host
    from fusionbench_core.run import instantiate
    from fusionbench_core.config import ComponentSpec

    method = instantiate(get_host(), "method", ComponentSpec("ties"))
    in_memory = method.run(pool).state_dict()
    on_disk = load_dir(out)
    assert on_disk.keys() == in_memory.keys()
    assert all(torch.equal(on_disk[k], in_memory[k]) for k in in_memory)


class _DirPool:
    """A pool whose pretrained model has files on disk (config.json), as the suites' pools do."""

    directory = None

    def __init__(self, name="dir-pool"):
        import torch

        from fusionbench_core.engine.sources import StateDictSource

        self.name = name
        self._sources = {"_pretrained_": {"w": torch.zeros(3)}, "a": {"w": torch.ones(3)},
                         "b": {"w": torch.full((3,), 3.0)}}
        self._source = StateDictSource
        self.model_names = ["a", "b"]
        self.has_pretrained = True

    def tensors(self, name):
        return self._source(self._sources[name])

    def model_dir(self, name):
        return _DirPool.directory if name == "_pretrained_" else None


class _DirPoolPlugin:
    from fusionbench_core import hookimpl

    @hookimpl
    def register_modelpools(self, register):
        register("dir-pool", _DirPool)


def test_fb_merge_from_a_pool_copies_the_pretrained_config(fb_cli, tmp_path):
    from safetensors.torch import load_file

    from fusionbench_core.plugins import registered_plugin

    _DirPool.directory = tmp_path / "base"
    _DirPool.directory.mkdir()
    (_DirPool.directory / "config.json").write_text('{"model_type": "toy"}')
    with registered_plugin(_DirPoolPlugin(), "dir-pool-plugin"):
        result = fb_cli("merge", "task_arithmetic", "-p", "dir-pool", "-s", "scaling_factor=0.5",
                        "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "config.json").read_text() == '{"model_type": "toy"}'
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))["w"]
    assert merged.tolist() == [2.0, 2.0, 2.0]  # 0 + 0.5 * (1 + 3)


def test_resolve_device_names_the_setting_in_its_errors():
    import torch

    from fusionbench_core.engine.devices import resolve_device
    from fusionbench_core.errors import ConfigError

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="^hyperparameter 'device': 'gpu0' is not a torch device$"):
        resolve_device("gpu0", setting="hyperparameter 'device'")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^option 'device' is 'cuda', but no CUDA device is available$"):
            resolve_device("cuda")
