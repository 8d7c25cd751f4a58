#!/usr/bin/env python
"""Merge benchmark: FusionBench's streaming engine vs mergekit vs upstream FusionBench vs a raw read.

One command from a fresh clone (after ``make setup`` or the venv of the README)::

    flock /tmp/fb-heavy.lock python benchmarks/merge_bench.py                  # ViT-B/32 shapes, N = 2, 4, 8, 16
    flock /tmp/fb-heavy.lock python benchmarks/merge_bench.py --suite llama    # 1.1B Llama shape, N = 2

It builds synthetic checkpoints with real tensor shapes (random weights; fine-tuned = pretrained +
N(0, σ²)) under ``--workdir`` (reused on later runs), warms the page cache with a raw read, then runs
every tool as a child process and polls ``/proc/<pid>/status`` for its wall time, peak ``RssAnon``
(heap and tensors) and peak ``VmRSS``. "work" is peak anon minus the anon of the same tool's
import-only process, i.e. the merge's own working memory. Ratios are printed from this one run.

mergekit and upstream FusionBench run from their own virtual environments (``--mergekit-python``,
``--fusionbench-python``; created with ``python -m venv /tmp/mk && /tmp/mk/bin/pip install
torch==2.13.0 mergekit`` and likewise ``fusion-bench`` in ``/tmp/fbup``); a tool whose interpreter
is missing is skipped and reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# -- shapes ------------------------------------------------------------------------------------


def vit_b32_shapes() -> dict[str, tuple[int, ...]]:
    """CLIPVisionModel ViT-B/32 (87.5M parameters), HF names."""
    d, mlp, p = 768, 3072, "vision_model."
    shapes = {f"{p}embeddings.class_embedding": (d,), f"{p}embeddings.patch_embedding.weight": (d, 3, 32, 32),
              f"{p}embeddings.position_embedding.weight": (50, d), f"{p}pre_layrnorm.weight": (d,),
              f"{p}pre_layrnorm.bias": (d,)}
    for i in range(12):
        q = f"{p}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{q}self_attn.{proj}.weight"] = (d, d)
            shapes[f"{q}self_attn.{proj}.bias"] = (d,)
        shapes |= {f"{q}layer_norm1.weight": (d,), f"{q}layer_norm1.bias": (d,), f"{q}mlp.fc1.weight": (mlp, d),
                   f"{q}mlp.fc1.bias": (mlp,), f"{q}mlp.fc2.weight": (d, mlp), f"{q}mlp.fc2.bias": (d,),
                   f"{q}layer_norm2.weight": (d,), f"{q}layer_norm2.bias": (d,)}
    shapes |= {f"{p}post_layernorm.weight": (d,), f"{p}post_layernorm.bias": (d,)}
    return shapes


VIT_CONFIG = {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "hidden_size": 768,
              "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224,
              "patch_size": 32, "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
              "projection_dim": 512, "torch_dtype": "float32"}


def llama_shapes(layers: int = 22) -> dict[str, tuple[int, ...]]:
    """TinyLlama-1.1B (1.10B parameters), HF names."""
    d, ff, kv, vocab = 2048, 5632, 256, 32000
    shapes = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(layers):
        q = f"model.layers.{i}."
        shapes |= {f"{q}self_attn.q_proj.weight": (d, d), f"{q}self_attn.k_proj.weight": (kv, d),
                   f"{q}self_attn.v_proj.weight": (kv, d), f"{q}self_attn.o_proj.weight": (d, d),
                   f"{q}mlp.gate_proj.weight": (ff, d), f"{q}mlp.up_proj.weight": (ff, d),
                   f"{q}mlp.down_proj.weight": (d, ff), f"{q}input_layernorm.weight": (d,),
                   f"{q}post_attention_layernorm.weight": (d,)}
    shapes |= {"model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    return shapes


LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                "torch_dtype": "bfloat16"}

SUITES = {
    "vit": {"shapes": vit_b32_shapes, "config": VIT_CONFIG, "dtype": "float32", "ns": [2, 4, 8, 16],
            "others_ns": [2, 8]},
    "llama": {"shapes": llama_shapes, "config": LLAMA_CONFIG, "dtype": "bfloat16", "ns": [2], "others_ns": [2]},
}


def build_checkpoints(suite: str, n: int, workdir: Path) -> tuple[Path, list[Path]]:
    """Pretrained + n fine-tuned checkpoint dirs (built once, reused)."""
    import torch

    from fusionbench_core.engine.writer import SafetensorsWriter

    spec = SUITES[suite]
    shapes = spec["shapes"]()
    dtype = getattr(torch, spec["dtype"])
    root = workdir / suite
    dirs = [root / "pretrained"] + [root / f"finetuned-{i:02d}" for i in range(n)]
    for index, path in enumerate(dirs):
        if (path / "model.safetensors").exists():
            continue
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        writer = SafetensorsWriter(tmp, [(k, s, dtype) for k, s in shapes.items()])
        for j, (key, shape) in enumerate(shapes.items()):
            base_gen = torch.Generator().manual_seed(j)
            value = torch.randn(shape, generator=base_gen) * 0.02
            if index > 0:
                gen = torch.Generator().manual_seed(1000 * index + j)
                value += torch.randn(shape, generator=gen) * 1e-3
            writer.write(key, value.to(dtype))
        writer.close()
        (tmp / "config.json").write_text(json.dumps(spec["config"], indent=2))
        tmp.rename(path)
        print(f"  built {path}", file=sys.stderr)
    return dirs[0], dirs[1 : n + 1]


def model_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


# -- measuring a child process -----------------------------------------------------------------


def _status(pid: int) -> tuple[int, int]:
    anon = rss = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return anon, rss


def measure(cmd: list[str], env: dict | None = None, stdout=subprocess.PIPE) -> dict:
    """Run ``cmd``; poll its RssAnon/VmRSS every 5 ms; return wall, peaks, exit code and stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    peak_anon = peak_rss = 0
    while proc.poll() is None:
        anon, rss = _status(proc.pid)
        peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
        time.sleep(0.005)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode()
    return {"wall_s": wall, "peak_anon": peak_anon, "peak_rss": peak_rss, "rc": proc.returncode, "stdout": out,
            "stderr": err[-2000:]}


# -- the tools ---------------------------------------------------------------------------------

OURS = {"average": "simple_average", "task_arithmetic": "task_arithmetic", "ties": "ties", "dare_ties": "dare_ties"}
MERGEKIT = {"average": "linear", "task_arithmetic": "task_arithmetic", "ties": "ties", "dare_ties": "dare_ties"}
UPSTREAM = {"average": "SimpleAverageAlgorithm", "task_arithmetic": "TaskArithmeticAlgorithm",
            "ties": "TiesMergingAlgorithm"}
UPSTREAM_ARGS = {"average": {}, "task_arithmetic": {"scaling_factor": 0.3},
                 "ties": {"scaling_factor": 0.3, "threshold": 20, "remove_keys": [], "merge_func": "sum"}}

IMPORTS = {
    "ours": "import torch, fusionbench_core.cli, fusionbench_core.merge, fusionbench_core.engine.tensorwise, "
            "fusionbench_core.engine.prefetch, fusionbench_core.engine.writer, fusionbench_core.engine.selection, "
            "fusionbench_methods.ties, fusionbench_methods.sign_consensus, fusionbench_methods.random_drop",
    "mergekit": "import torch, mergekit.merge, mergekit.config, mergekit.options, mergekit.merge_methods.api, "
                "safetensors.torch",
    "fusionbench": "import torch, fusion_bench, fusion_bench.method, fusion_bench.modelpool; "
                   "from transformers import CLIPVisionModel",
}


def ours_cmd(method: str, base: Path, models: list[Path], out: Path) -> list[str]:
    cmd = [sys.executable, "-c", "from fusionbench_core.cli import main; main()", "merge", OURS[method], "-o", str(out),
           "--json"]
    if method != "average":
        cmd += ["--pretrained", str(base)]
    for model in models:
        cmd += ["--model", str(model)]
    return cmd


def mergekit_cmd(python: str, method: str, base: Path, models: list[Path], out: Path, dtype: str) -> list[str]:
    params = {"average": {"weight": 1.0}, "task_arithmetic": {"weight": 0.3},
              "ties": {"weight": 1.0, "density": 0.2}, "dare_ties": {"weight": 1.0, "density": 0.5}}[method]
    config = {"merge_method": MERGEKIT[method], "dtype": dtype,
              "models": [{"model": str(m), "parameters": params} for m in models]}
    if method != "average":
        config["base_model"] = str(base)
    if method in ("ties", "dare_ties"):
        config["parameters"] = {"normalize": False, "lambda": 0.3}
    path = out.with_suffix(".yml")
    path.write_text(json.dumps(config))  # JSON is YAML
    binary = str(Path(python).parent / "mergekit-yaml")
    return [binary, str(path), str(out), "--no-copy-tokenizer", "--quiet", "--random-seed", "0"]


def mergekit_api_cmd(python: str, method: str, base: Path, models: list[Path], out: Path) -> list[str]:
    """mergekit 0.1.5's in-memory ``merge_state_dicts`` over lazily read safetensors (its CLI infers no
    architecture for CLIPVisionModel checkpoints and merges nothing)."""
    params = {"average": {"weight": 1.0}, "task_arithmetic": {"weight": 0.3},
              "ties": {"weight": 1.0, "density": 0.2, "normalize": False, "lambda": 0.3},
              "dare_ties": {"weight": 1.0, "density": 0.5, "normalize": False, "lambda": 0.3}}[method]
    inputs = {"base": str(base), **{f"m{i}": str(m) for i, m in enumerate(models)}}
    if method == "average":
        inputs.pop("base")
    script = textwrap.dedent(f"""
        import torch
        from collections.abc import Mapping
        from safetensors import safe_open
        from safetensors.torch import save_file
        from mergekit.merge_methods.api import merge_state_dicts
        torch.manual_seed(0)
        class Lazy(Mapping):
            def __init__(self, path):
                self.handle = safe_open(path + "/model.safetensors", framework="pt")
                self.names = list(self.handle.keys())
            def __getitem__(self, key):
                return self.handle.get_tensor(key)
            def __iter__(self):
                return iter(self.names)
            def __len__(self):
                return len(self.names)
        inputs = {json.dumps(inputs)}
        with torch.no_grad():
            merged = merge_state_dicts({{k: Lazy(v) for k, v in inputs.items()}}, {MERGEKIT[method]!r},
                                       parameters={params!r}, base={None if method == "average" else "base"!r})
        import os
        os.makedirs({str(out)!r}, exist_ok=True)
        save_file({{k: v.contiguous() for k, v in merged.items()}}, {str(out)!r} + "/model.safetensors")
    """)
    return [python, "-c", "import json\n" + script]


def upstream_cmd(python: str, method: str, base: Path, models: list[Path], out: Path) -> list[str]:
    script = textwrap.dedent(f"""
        import torch
        from transformers import CLIPVisionModel
        from fusion_bench.method import {UPSTREAM[method]} as Algorithm
        from fusion_bench.modelpool import BaseModelPool
        paths = {json.dumps({"_pretrained_": str(base), **{f"model_{i}": str(m) for i, m in enumerate(models)}})}
        pool = BaseModelPool({{name: CLIPVisionModel.from_pretrained(path) for name, path in paths.items()}})
        merged = Algorithm(**{json.dumps(UPSTREAM_ARGS[method])}).run(pool)
        merged.save_pretrained({str(out)!r})
    """)
    return [python, "-c", script]


def import_baseline(python: str, tool: str) -> int:
    result = measure([python, "-c", IMPORTS[tool] + "; import time; time.sleep(0.5)"])
    return result["peak_anon"] if result["rc"] == 0 else 0


# -- the run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Merge benchmark (see the module docstring).")
    parser.add_argument("--suite", choices=sorted(SUITES), default="vit", help="checkpoint shapes")
    parser.add_argument("--ns", help="comma-separated model counts for our engine (default: the suite's)")
    parser.add_argument("--others-ns", help="model counts for mergekit/FusionBench (default: the suite's)")
    parser.add_argument("--fusionbench-ns", default="2",
                        help="model counts for upstream FusionBench (its TIES holds ~3 GB per ViT model: N=8 needs "
                             "~24 GB, more than a 24 GB box has free; its N=8 figure is quoted from the anchors)")
    parser.add_argument("--methods", default="average,task_arithmetic,ties,dare_ties")
    parser.add_argument("--tools", default="ours,mergekit,fusionbench")
    parser.add_argument("--workdir", default="/tmp/fb-merge-bench")
    parser.add_argument("--mergekit-python", default="/tmp/mk/bin/python")
    parser.add_argument("--fusionbench-python", default="/tmp/fbup/bin/python")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["FUSIONBENCH_PROGRESS"] = "0"
    import torch

    torch.set_num_threads(1)
    spec = SUITES[args.suite]
    ns = [int(n) for n in args.ns.split(",")] if args.ns else spec["ns"]
    others_ns = [int(n) for n in args.others_ns.split(",")] if args.others_ns else spec["others_ns"]
    methods = args.methods.split(",")
    fusionbench_ns = [int(n) for n in args.fusionbench_ns.split(",")]
    tools = args.tools.split(",")
    workdir = Path(args.workdir)
    pythons = {"ours": sys.executable, "mergekit": args.mergekit_python, "fusionbench": args.fusionbench_python}
    available = {tool: Path(pythons[tool]).exists() for tool in tools}
    if args.suite != "vit" and "fusionbench" in tools:
        available["fusionbench"] = False
        print("fusionbench: skipped (its CLIP pool loads ViT-shaped checkpoints only in this script)", file=sys.stderr)
    for tool, ok in available.items():
        if not ok:
            print(f"{tool}: skipped, no interpreter at {pythons[tool]}", file=sys.stderr)
    baselines = {tool: import_baseline(pythons[tool], tool) for tool in tools if available[tool]}
    print("anon RSS after imports (GB):", {t: round(b / 1e9, 3) for t, b in baselines.items()}, file=sys.stderr)

    rows = []
    for n in sorted(set(ns) | set(others_ns)):
        base, models = build_checkpoints(args.suite, n, workdir)
        files = [str(f) for d in [base, *models] for f in sorted(Path(d).glob("*.safetensors"))]
        size = model_bytes(base)
        in_bytes = size * (n + 1)
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        raw = min((measure(["cat", *files], stdout=subprocess.DEVNULL) for _ in range(3)), key=lambda r: r["wall_s"])
        raw_bw = in_bytes / raw["wall_s"]
        rows.append({"n": n, "tool": "raw read", "method": "-", "wall_s": raw["wall_s"], "merge_s": raw["wall_s"],
                     "GBps": raw_bw / 1e9, "anon_GB": 0, "work_GB": 0, "rss_GB": raw["peak_rss"] / 1e9})
        print(f"N={n}: raw warm read {in_bytes / 1e9:.2f} GB in {raw['wall_s']:.2f}s", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=workdir) as scratch:
            for method in methods:
                for tool in tools:
                    if not available[tool] or (tool != "ours" and n not in others_ns):
                        continue
                    if tool == "ours" and n not in ns:
                        continue
                    if tool == "fusionbench" and (method not in UPSTREAM or n not in fusionbench_ns):
                        continue
                    out = Path(scratch) / f"{tool}-{method}"
                    if tool == "ours":
                        cmd = ours_cmd(method, base, models, out)
                    elif tool == "mergekit" and args.suite == "vit":
                        cmd = mergekit_api_cmd(pythons[tool], method, base, models, out)
                    elif tool == "mergekit":
                        cmd = mergekit_cmd(pythons[tool], method, base, models, out, spec["dtype"])
                    else:
                        cmd = upstream_cmd(pythons[tool], method, base, models, out)
                    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
                    result = measure(cmd)
                    shutil.rmtree(out, ignore_errors=True)
                    if result["rc"] != 0:
                        print(f"{tool} {method} N={n}: FAILED rc={result['rc']}: {result['stderr'][-600:]}",
                              file=sys.stderr)
                        rows.append({"n": n, "tool": tool, "method": method, "failed": result["stderr"][-300:]})
                        continue
                    merge_s = result["wall_s"]
                    if tool == "ours":
                        merge_s = json.loads(result["stdout"])["wall_s"]
                    row = {"n": n, "tool": tool, "method": method, "wall_s": result["wall_s"], "merge_s": merge_s,
                           "GBps": in_bytes / merge_s / 1e9, "anon_GB": result["peak_anon"] / 1e9,
                           "work_GB": (result["peak_anon"] - baselines[tool]) / 1e9, "rss_GB": result["peak_rss"] / 1e9}
                    rows.append(row)
                    print(f"  {tool:12s} {method:16s} N={n:2d}: {result['wall_s']:7.2f}s (merge {merge_s:6.2f}s) "
                          f"anon {row['anon_GB']:.3f} GB work {row['work_GB']:.3f} GB rss {row['rss_GB']:.2f} GB",
                          file=sys.stderr)
    report(rows, args.suite, size, baselines)
    (workdir / f"results-{args.suite}.json").write_text(json.dumps({"rows": rows, "model_bytes": size,
                                                                    "baselines": baselines}, indent=2))


def report(rows: list[dict], suite: str, size: int, baselines: dict) -> None:
    """Print the table and the ratios against the targets (markdown, for docs/performance.md)."""
    print(f"\n### {suite}: one model = {size / 1e9:.3f} GB; anon after imports: "
          + ", ".join(f"{t} {b / 1e9:.2f} GB" for t, b in baselines.items()) + "\n")
    print("| N | tool | method | wall s (command) | merge s | GB/s in | peak anon GB | work GB (× model) | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['n']} | {r['tool']} | {r['method']} | failed | | | | | |")
            continue
        print(f"| {r['n']} | {r['tool']} | {r['method']} | {r['wall_s']:.2f} | {r['merge_s']:.2f} | {r['GBps']:.2f} | "
              f"{r['anon_GB']:.3f} | {r['work_GB']:.3f} ({r['work_GB'] * 1e9 / size:.2f}×) | {r['rss_GB']:.2f} |")
    print("\nRatios (same run):\n")
    by = {(r["n"], r["tool"], r["method"]): r for r in rows if "failed" not in r}
    for (n, tool, method), r in sorted(by.items()):
        if tool != "ours":
            continue
        raw = by.get((n, "raw read", "-"))
        parts = []
        if raw and method in ("average", "task_arithmetic"):
            parts.append(f"bandwidth {r['GBps'] / raw['GBps']:.0%} of raw read (target ≥70%)")
        parts.append(f"work {r['work_GB'] * 1e9 / size:.2f}× one model (target ≤0.25×)")
        for other in ("mergekit", "fusionbench"):
            o = by.get((n, other, method))
            if o:
                parts.append(f"{o['wall_s'] / r['wall_s']:.1f}× faster than {other} (command), "
                             f"{o['merge_s'] / r['merge_s']:.1f}× (merge only), work ratio "
                             f"{(r['work_GB'] / o['work_GB']) if o['work_GB'] > 0 else float('nan'):.2f}")
        print(f"- N={n} {method}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
