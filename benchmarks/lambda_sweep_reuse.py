#!/usr/bin/env python
"""λ-sweep reuse benchmark: a 10-point λ sweep through ``fb sweep``'s λ-group path against 10 bare evaluations.

One command (mini-vision built, as ``make run`` builds it; the full variant by default)::

    flock /tmp/fb-torch.lock python benchmarks/lambda_sweep_reuse.py                 # task arithmetic, seed 0
    flock /tmp/fb-torch.lock python benchmarks/lambda_sweep_reuse.py --method ties --select-on test

Both arms run in this one process, the sweep first:

1. **sweep**: :func:`fusionbench_core.experiments.reuse.execute_lambda_group` over λ = 0.1, 0.2, …, 1.0,
   timed from nothing: it builds the model pool and the task pool, computes the task vector once
   (the method run at λ = 1), then per λ builds ``θ₀ + λ·τ`` and scores it, on the splits ``fb sweep``
   scores (validation and test under ``--select-on validation``, its default; the test split alone
   under ``--select-on test``);
2. **bare**: the same 10 models merged beforehand (untimed, each by the method itself), then a fresh
   task pool scores each on the same splits: evaluation alone, with the data already in memory (the
   sweep loaded it), which favours this arm.

It prints JSON on stdout: both times, their ratio (the target of issue #16 is at most 1.5), the
task-vector time, and the largest difference in accuracy between the two arms' scores (reused
weights equal the method's own up to one float32 rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    """Run both arms and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="task_arithmetic", choices=("task_arithmetic", "ties"))
    parser.add_argument("--points", type=int, default=10, help="λ values: 0.1, 0.2, … (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="the suite's seed (its experts)")
    parser.add_argument("--quick", action="store_true", help="the quick variant instead of the full one")
    parser.add_argument("--select-on", default="validation", choices=("validation", "test"),
                        help="validation: score validation and test, as fb sweep does by default; test: test only")
    args = parser.parse_args()

    from fusionbench_core.config import ComponentSpec, RunConfig
    from fusionbench_core.experiments.reuse import execute_lambda_group
    from fusionbench_core.plugins import get_host
    from fusionbench_core.protocols import bind_taskpool
    from fusionbench_core.run import instantiate

    host = get_host()
    lambdas = [round(0.1 * (i + 1), 4) for i in range(args.points)]
    modelpool = ComponentSpec("mini-vision", {"seed": args.seed, "quick": args.quick})
    taskpool = ComponentSpec("mini-vision", {})
    splits = ("validation", "test") if args.select_on == "validation" else ()
    configs = [RunConfig(ComponentSpec(args.method, {"scaling_factor": lam}), ComponentSpec(modelpool.name,
               dict(modelpool.options)), ComponentSpec(taskpool.name, {}), 0) for lam in lambdas]

    print(f"sweep: {args.method}, {len(lambdas)} λ values, splits {', '.join(splits) or 'test'}", file=sys.stderr)
    start = time.perf_counter()
    reports = list(execute_lambda_group(configs, "scaling_factor", host, splits=splits))
    sweep_s = time.perf_counter() - start

    print("bare: merging the same models (untimed)", file=sys.stderr)
    pool = instantiate(host, "modelpool", ComponentSpec(modelpool.name, dict(modelpool.options)))
    models = [instantiate(host, "method", ComponentSpec(args.method, {"scaling_factor": lam})).run(pool)
              for lam in lambdas]
    tasks = instantiate(host, "taskpool", ComponentSpec(taskpool.name, {}))
    bind_taskpool(tasks, pool)
    print("bare: scoring them", file=sys.stderr)
    start = time.perf_counter()
    bare = []
    for model in models:
        scored = {"test": tasks.evaluate(model)}
        for split in splits:
            if split != "test":
                scored[split] = tasks.evaluate_split(model, split)
        bare.append(scored)
    bare_s = time.perf_counter() - start

    differences = []
    for report, scored in zip(reports, bare):
        for split, result in scored.items():
            ours = report["splits"][split]["tasks"] if splits else report["tasks"]
            differences += [abs(ours[t]["accuracy"] - result.tasks[t]["accuracy"]) for t in result.tasks]
    group = reports[0]["cost"]["lambda_group"]
    print(json.dumps({
        "method": args.method, "suite": f"mini-vision {'quick' if args.quick else 'full'}, seed {args.seed}",
        "points": len(lambdas), "splits": list(splits) or ["test"],
        "sweep_s": round(sweep_s, 2), "bare_evaluations_s": round(bare_s, 2), "ratio": round(sweep_s / bare_s, 3),
        "task_vector_s": group["task_vector_s"],
        "max_accuracy_difference": max(differences),
        "test_accuracy": {str(lam): round(r["splits"]["test"]["average"]["accuracy"] if splits
                                          else r["average"]["accuracy"], 4) for lam, r in zip(lambdas, reports)},
    }, indent=2))


if __name__ == "__main__":
    main()
