#!/usr/bin/env python
"""Time ``fb merge --device cuda`` against ``--device cpu`` on the same machine (run where a GPU is).

    python benchmarks/gpu_merge_bench.py [--suites vit,llama] [--out DIR]

Builds the same synthetic checkpoints as ``merge_bench.py`` (ViT-B/32 shape, N=8, float32; 1.1B Llama
shape, N=2, bfloat16) on local disk, warms the page cache, then runs each method in process on each
device twice (the first run warms CUDA and the caches; the second is reported) and checks that the
CUDA output agrees with the CPU output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from merge_bench import build_checkpoints, model_bytes  # noqa: E402


def warm(paths):
    for path in paths:
        for file in Path(path).glob("*.safetensors"):
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def compare(a: Path, b: Path) -> float:
    import torch

    from fusionbench_core.engine.sources import open_source

    x, y = open_source(a), open_source(b)
    worst = 0.0
    for key in x.keys():
        u, v = x.get(key).double(), y.get(key).double()
        worst = max(worst, float((u - v).abs().max() / u.abs().max().clamp(min=1e-12)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="vit,llama")
    parser.add_argument("--methods", default="task_arithmetic,ties,dare_ties")
    parser.add_argument("--workdir", default="/tmp/fb-gpu-bench")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    os.environ["FUSIONBENCH_PROGRESS"] = "0"
    import torch

    from fusionbench_core.merge import merge_command

    rows = []
    info = {"torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_threads": torch.get_num_threads()}
    print(json.dumps(info))
    for suite in args.suites.split(","):
        n = 8 if suite == "vit" else 2
        t0 = time.perf_counter()
        base, models = build_checkpoints(suite, n, Path(args.workdir))
        print(f"built {suite} in {time.perf_counter() - t0:.1f}s", flush=True)
        size = model_bytes(base)
        for method in args.methods.split(","):
            outs = {}
            for device in ("cpu", "cuda"):
                warm([base, *models])
                times = []
                for attempt in range(2):
                    out = Path(args.workdir) / f"out-{suite}-{method}-{device}"
                    start = time.perf_counter()
                    merge_command(method=method, pretrained=base, models=models, modelpool=None, hyperparameters={},
                                  output=out, device=device, dtype=None, seed=0, progress=False, overwrite=True)
                    times.append(time.perf_counter() - start)
                outs[device] = out
                row = {"suite": suite, "n": n, "method": method, "device": device, "wall_s": round(times[-1], 3),
                       "first_s": round(times[0], 3), "input_GB": round(size * (n + 1) / 1e9, 2),
                       "GB_per_s": round(size * (n + 1) / 1e9 / times[-1], 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            diff = compare(outs["cpu"], outs["cuda"])
            rows.append({"suite": suite, "method": method, "max_rel_diff_cuda_vs_cpu": diff})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_merge_bench.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
