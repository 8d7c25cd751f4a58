"""Measure docs/results/alignment.md: barriers and merged accuracy on the full independent suites, over 3 seeds.

    FUSIONBENCH_CACHE=... python plugins/fusionbench_alignment/scripts/alignment_results.py OUT_DIR [--seeds 0 1 2]

Writes ``OUT_DIR/results.json`` and, for seed 0, the ``fb connect`` PNGs of the MLP and the CNN.
Builds the suites first when they are missing (cached, resumable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fusionbench_core.config import ComponentSpec
from fusionbench_core.plugins import get_host
from fusionbench_core.run import instantiate
from fusionbench_alignment.report import connect_pair, write_outputs

MERGES = {
    "naive average": ("simple_average", {}),
    "weight matching": ("weight_matching", {}),
    "activation matching": ("activation_matching", {}),
    "OT fusion (EMD)": ("ot_fusion", {}),
    "OT fusion (Sinkhorn)": ("ot_fusion", {"solver": "sinkhorn"}),
    "ZipIt!": ("zipit", {}),
    "ensemble": ("simple_ensemble", {}),
}
HALVES = {
    "naive average": ("simple_average", {}),
    "weight matching": ("weight_matching", {}),
    "ZipIt! (full)": ("zipit", {}),
    "ZipIt! (to layer 2)": ("zipit", {"zip_layers": 2}),
    "ZipIt! (to layer 1)": ("zipit", {"zip_layers": 1}),
    "ensemble": ("simple_ensemble", {}),
}


def score(host, pool, pool_name, method, settings, seed):
    """Merge ``pool``'s models with ``method`` and score on the suite's task pool."""
    algorithm = instantiate(host, "method", ComponentSpec(method, dict(settings)))
    algorithm.seed = seed
    torch.manual_seed(seed)
    fused = algorithm.run(pool)
    taskpool = instantiate(host, "taskpool", ComponentSpec(pool_name, {}))
    taskpool.bind(pool)
    return {t: m["accuracy"] for t, m in taskpool.evaluate(fused).tasks.items()}


def evaluate(host, pool, pool_name, model):
    """Accuracy per task of one model on the suite's task pool."""
    taskpool = instantiate(host, "taskpool", ComponentSpec(pool_name, {}))
    taskpool.bind(pool)
    return {t: m["accuracy"] for t, m in taskpool.evaluate(model).tasks.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    host = get_host()
    results: dict = {"seeds": args.seeds, "same": {}, "halves": {}, "timing_s": {}}
    for arch in args.archs:
        name = f"independent-{arch}"
        for seed in args.seeds:
            start = time.perf_counter()
            pool = instantiate(host, "modelpool", ComponentSpec(name, {"seed": seed}))
            results["timing_s"][f"{name}/seed{seed}/build"] = round(time.perf_counter() - start, 1)
            start = time.perf_counter()
            row = {label: score(host, pool, name, m, s, seed)["mnist"] for label, (m, s) in MERGES.items()}
            row["endpoints"] = [evaluate(host, pool, name, pool.load_model(n))["mnist"] for n in pool.model_names]
            for align in ("weight_matching", "activation_matching"):
                aligner = instantiate(host, "method", ComponentSpec(align, {}))
                aligner.seed = seed
                res = connect_pair(pool, "init0", "init1", "mnist", aligner=aligner, curve=(align == "weight_matching"),
                                   curve_steps=600, seed=seed)
                for label, path in res["paths"].items():
                    row[f"barrier {label}"] = {"loss": path["loss_barrier"], "error": path["error_barrier"]}
                    row[f"midpoint {label}"] = path["accuracy"][len(path["alpha"]) // 2]
                if seed == args.seeds[0] and align == "weight_matching":
                    write_outputs(res, args.out / f"connect-{arch}")
            results["same"].setdefault(arch, []).append(row)
            results["timing_s"][f"{name}/seed{seed}/measure"] = round(time.perf_counter() - start, 1)
            print(arch, seed, json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        name = f"independent-{arch}-halves"
        for seed in args.seeds:
            start = time.perf_counter()
            pool = instantiate(host, "modelpool", ComponentSpec(name, {"seed": seed}))
            results["timing_s"][f"{name}/seed{seed}/build"] = round(time.perf_counter() - start, 1)
            row = {label: score(host, pool, name, m, s, seed) for label, (m, s) in HALVES.items()}
            for n in pool.model_names:
                row[f"model {n}"] = evaluate(host, pool, name, pool.load_model(n))
            results["halves"].setdefault(arch, []).append(row)
            print(arch, "halves", seed, json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary(results), indent=2))


def summary(results: dict) -> dict:
    """Mean and standard deviation over seeds of every number."""
    def agg(rows):
        out = {}
        for key in rows[0]:
            vals = [r[key] for r in rows]
            if isinstance(vals[0], dict):
                out[key] = {k: _ms([v[k] for v in vals]) for k in vals[0]}
            elif isinstance(vals[0], list):
                out[key] = [_ms([v[i] for v in vals]) for i in range(len(vals[0]))]
            else:
                out[key] = _ms(vals)
        return out
    return {kind: {arch: agg(rows) for arch, rows in results[kind].items()} for kind in ("same", "halves")}


def _ms(values):
    return [round(statistics.mean(values), 4), round(statistics.pstdev(values), 4)]


if __name__ == "__main__":
    main()
