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


# -- renaming sources --------------------------------------------------------------------------


class CountingSafetensors(SafetensorsSource):
    """A safetensors source that counts the bytes handed out, by copy (``pread``) or by zero-copy view."""

    def __init__(self, files):
        super().__init__(files)
        self.bytes_read = 0

    def _pread(self, entry, begin, end, out):
        self.bytes_read += end - begin
        super()._pread(entry, begin, end, out)

    def view_rows(self, key, start, stop):
        view = super().view_rows(key, start, stop)
        self.bytes_read += view.numel() * view.element_size()
        return view


class CountingState(StateDictSource):
    """An in-memory source that counts the bytes of every tensor or row block it returns."""

    def __init__(self, state):
        super().__init__(state)
        self.bytes_read = 0

    def get(self, key):
        tensor = super().get(key)
        self.bytes_read += tensor.numel() * tensor.element_size()
        return tensor

    def get_rows(self, key, start, stop):
        rows = super().get_rows(key, start, stop)
        self.bytes_read += rows.numel() * rows.element_size()
        return rows


class Sum(TensorwiseAlgorithm):
    """A test method: θ₀ + Σ τ_i, row-chunkable, never writing to its inputs (so views are allowed)."""

    name = "test_sum"
    chunkable = True
    inplace_inputs = False

    def merge_tensor(self, key, pretrained, models):
        return pretrained + sum(tensor - pretrained for tensor in models)


def test_renamed_source_reads_each_tensor_once_in_row_blocks(tmp_path):
    from fusionbench_core.engine.sources import RenamedSource

    gen = torch.Generator().manual_seed(0)
    tensors = [{"w": torch.randn(64, 64, generator=gen)} for _ in range(3)]
    for i, tensor in enumerate(tensors):
        save_file(tensor, str(tmp_path / f"m{i}.safetensors"))
    inner = [CountingSafetensors([tmp_path / f"m{i}.safetensors"]) for i in range(3)]
    renamed = [RenamedSource(source, {"tower.w": "w"}) for source in inner]
    assert hasattr(renamed[0], "view_rows") and hasattr(renamed[0], "release") and hasattr(renamed[0], "read_into")
    sink = StateDictSink()
    merge_sources(Sum(), renamed[0], renamed[1:], sink=sink, chunk_elements=1024)  # 4 blocks of 16 rows
    assert [source.bytes_read for source in inner] == [64 * 64 * 4] * 3  # 16 KiB per input, not 4 × 16 KiB
    expected = tensors[1]["w"] + tensors[2]["w"] - tensors[0]["w"]
    assert list(sink.state) == ["tower.w"] and torch.allclose(sink.state["tower.w"], expected, atol=1e-6)

    plain = [CountingState(tensor) for tensor in tensors]  # no zero-copy path: none is claimed
    renamed = [RenamedSource(source, {"tower.w": "w"}) for source in plain]
    assert not hasattr(renamed[0], "view_rows") and not hasattr(renamed[0], "read_into")
    merge_sources(Sum(), renamed[0], renamed[1:], sink=StateDictSink(), chunk_elements=1024)
    assert [source.bytes_read for source in plain] == [64 * 64 * 4] * 3
    assert torch.equal(renamed[1].get_rows("tower.w", 3, 5), tensors[1]["w"][3:5])
    assert renamed[1].info("tower.w").shape == (64, 64) and renamed[1].keys() == ["tower.w"]


def test_engine_options_are_per_merge_not_shared_by_the_class():
    assert TensorwiseAlgorithm.engine is None
    first, second = Mean(), Mean()
    first.blocks = []
    merge_sources(first, None, [StateDictSource(state(0))], sink=StateDictSink(), chunk_elements=64)
    assert first.engine.chunk_elements == 64 and second.engine is None and TensorwiseAlgorithm.engine is None


def test_engine_modules_form_no_import_cycle_and_import_no_application_layer():
    import ast

    import fusionbench_core.engine as engine

    folder = Path(engine.__file__).parent
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} - {"api", "expert_suite"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in modules:
                edges.add(node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in ("errors", "protocols"), f"engine.{name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fusionbench_core."):
                target = node.module.split(".")
                assert target[1] in ("errors", "protocols", "engine"), f"engine.{name} imports {node.module}"
                if target[1] == "engine" and len(target) > 2:
                    edges.add(target[2])

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [name for name in sorted(graph) if reaches(name, name, set())] == []
    assert "sources" not in graph["lora"] and "lora" in graph["sources"]


# -- checked input files -----------------------------------------------------------------------


def one_line_error(call, *needles):
    with pytest.raises(ModelLoadError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(needle in message for needle in needles), message
    return message


def test_a_broken_model_config_is_refused_naming_the_file(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    save_file(state(0), str(directory / "model.safetensors"))
    (directory / "config.json").write_text('{"model_type": "toy",')
    one_line_error(lambda: open_source(directory), str(directory / "config.json"), "not valid JSON")
    (directory / "config.json").write_text('["model_type"]')
    one_line_error(lambda: open_source(directory), "config.json", "not a JSON object")
    (directory / "config.json").write_text('{"model_type": "toy"}')
    assert set(open_source(directory).keys()) == set(state(0))


def adapter(tmp_path: Path, name: str, config_text: str) -> Path:
    gen = torch.Generator().manual_seed(3)
    path = write_adapter(tmp_path / name, {"base_model.model.layer.lora_A.weight": torch.randn(2, 8, generator=gen),
                                           "base_model.model.layer.lora_B.weight": torch.randn(8, 2, generator=gen)})
    (path / "adapter_config.json").write_text(config_text)
    return path


def test_a_broken_adapter_config_is_refused_naming_the_file(tmp_path):
    base = StateDictSource(state(0))
    cases = {
        "json": ('{"peft_type": "LORA", "lora_alpha": 4', "not valid JSON"),
        "alpha": ('{"peft_type": "LORA", "r": 2}', "lacks the key 'lora_alpha'"),
        "type": ('{"peft_type": "IA3", "lora_alpha": 4}', "'IA3' adapter"),
        "number": ('{"peft_type": "LORA", "lora_alpha": "4"}', "'lora_alpha' must be a number"),
        "flag": ('{"peft_type": "LORA", "lora_alpha": 4, "fan_in_fan_out": "yes"}', "'fan_in_fan_out'"),
        "pattern": ('{"peft_type": "LORA", "lora_alpha": 4, "alpha_pattern": {"layer": "x"}}', "'alpha_pattern'"),
    }
    for name, (text, needle) in cases.items():
        path = adapter(tmp_path, name, text)
        one_line_error(lambda path=path: open_source(path, base=base), str(path / "adapter_config.json"), needle)
    good = adapter(tmp_path, "good", '{"peft_type": "LORA", "lora_alpha": 4}')
    assert open_source(good, base=base).scale("layer.weight") == 2.0  # 4 / r, r = 2 from A's shape


def test_a_broken_shard_index_is_refused_naming_the_file(tmp_path):
    tensors = state(1)
    first = {k: v for k, v in tensors.items() if k.startswith("embed")}
    second = {k: v for k, v in tensors.items() if not k.startswith("embed")}
    save_file(first, str(tmp_path / "a.safetensors"))
    save_file(second, str(tmp_path / "b.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    good = {k: "a.safetensors" for k in first} | {k: "b.safetensors" for k in second}
    cases = [
        ('{"weight_map": {', "not valid JSON"),
        (json.dumps({"metadata": {}}), "lacks the key 'weight_map'"),
        (json.dumps({"weight_map": []}), "'weight_map' is not"),
        (json.dumps({"weight_map": good | {"layer.bias": "c.safetensors"}}), "shard 'c.safetensors', which does not exist"),
        (json.dumps({"weight_map": good | {"layer.bias": "a.safetensors"}}), "'layer.bias' is not in shard 'a.safetensors'"),
        (json.dumps({"weight_map": {k: v for k, v in good.items() if k != "scale"}}), "'scale', which the index does not list"),
    ]
    for text, needle in cases:
        index.write_text(text)
        one_line_error(lambda: open_source(index), str(index), needle)
        one_line_error(lambda: open_source(tmp_path), str(index), needle)
    index.write_text(json.dumps({"weight_map": good}))
    assert load_dir(tmp_path).keys() == tensors.keys()


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
    again = fb_cli(*args, "--overwrite")  # an existing output is refused without it
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


def test_fb_merge_refuses_a_broken_config_json_in_one_line(fb_cli, model_dirs, tmp_path):
    base, models = model_dirs
    (models[1] / "config.json").write_text('{"model_type": ')
    result = fb_cli("merge", "task_arithmetic", "--pretrained", str(base), "--model", str(models[0]),
                    "--model", str(models[1]), "-o", str(tmp_path / "o"))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, lines
    assert str(models[1] / "config.json") in lines[0] and "not valid JSON" in lines[0]
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
