"""Task arithmetic near λ = 1/T against the simple average on mini-vision, on validation and on test.

With T tasks the simple average is task arithmetic at λ = 1/T. This prints, for each expert seed,
the mean accuracy of task arithmetic at λ = 1/8 (the simple average of the eight experts), 0.15
and 0.2 on the first 500 validation images per task (what the design-3 results of
``docs/results/mini.md`` selected λ on) and on the whole test split, to show whether validation can
order such nearby λ.

Run: ``python benchmarks/mini_average_vs_lambda.py [--seeds 0 1 2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")


def main() -> None:
    import torch
    from fusionbench_vision.mini import pool as pool_module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for seed in args.seeds:
        pool = pool_module.MiniVisionModelPool(seed=seed)
        tasks = list(pool.model_names)
        scorers = {"validation": pool_module.MiniVisionTaskPool(max_examples=500), "test": pool_module.MiniVisionTaskPool()}
        for scorer in scorers.values():
            scorer.bind(pool)
        base = pool.load_model("_pretrained_").state_dict()
        experts = {t: pool.load_model(t).state_dict() for t in tasks}
        out = {}
        for lam in (1 / len(tasks), 0.15, 0.2):
            state = {k: base[k] + lam * sum(experts[t][k] - base[k] for t in tasks) if base[k].is_floating_point()
                     else base[k] for k in base}
            model = pool.build_model(state)
            for split in ("validation", "test"):
                report = scorers[split].evaluate_split(model, split)
                out[f"λ={lam:.3g} {split}"] = round(100 * statistics.fmean(report.tasks[t]["accuracy"] for t in tasks), 2)
        print(f"seed {seed}: {json.dumps(out, ensure_ascii=False)}", flush=True)


if __name__ == "__main__":
    main()
