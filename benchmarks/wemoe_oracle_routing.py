"""Is WEMoE's shortfall on a suite the routing objective or the architecture? An oracle-routing check.

WEMoE merges everything outside the MLPs by task arithmetic and routes each MLP over the task
vectors. This script builds WEMoE on a data model pool with untrained constant routers, then
scores three routings on each task's test split:

- ``constant λ``: every router outputs λ (= task arithmetic's MLPs; the untrained model);
- ``oracle``: on task *t* every router outputs the one-hot weights of expert *t* (the MLPs of
  expert *t*, the rest task-arithmetic merged), the best a router could learn;
- ``entropy-trained``: the routers after WEMoE's test-time entropy minimisation at the given
  learning rate and steps.

Run: ``python benchmarks/wemoe_oracle_routing.py [--pool mini-vision] [--seed 0] [--lr 1e-3 --steps 100]``.
"""
from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")


def main() -> None:
    import torch
    from fusionbench_core.plugins import get_host

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="mini-vision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    host = get_host()
    pool = host.registry("modelpool").get(args.pool)(seed=args.seed)
    taskpool = host.registry("taskpool").get(args.pool)()
    taskpool.bind(pool)
    wemoe = host.registry("method").get("wemoe")
    tasks = list(pool.model_names)

    def routed(model, weights):
        from fusionbench_mixing.modules import WeightEnsemblingMLP
        for module in model.modules():
            if isinstance(module, WeightEnsemblingMLP):
                last = module.router.net[-1]
                with torch.no_grad():
                    for layer in module.router.net:
                        if isinstance(layer, torch.nn.Linear):
                            layer.weight.zero_()
                    last.bias.copy_(weights)
        return model

    untrained = wemoe(steps=0, router_init_std=0.0).run(pool)
    constant = {t: r["accuracy"] for t, r in taskpool.evaluate(untrained).tasks.items()}
    oracle = {}
    for i, task in enumerate(tasks):
        routed(untrained, torch.nn.functional.one_hot(torch.tensor(i), len(tasks)).float())
        oracle[task] = taskpool.evaluate(untrained).tasks[task]["accuracy"]  # only task i's score is read
    trained = wemoe(steps=args.steps, lr=args.lr).run(pool)
    entropy = {t: r["accuracy"] for t, r in taskpool.evaluate(trained).tasks.items()}
    individual = {t: taskpool.evaluate(pool.load_model(t)).tasks[t]["accuracy"] for t in tasks}
    print(f"{'task':20s} {'constant λ':>11s} {'oracle':>8s} {'entropy':>8s} {'individual':>11s}")
    for t in tasks:
        print(f"{t:20s} {100 * constant[t]:11.1f} {100 * oracle[t]:8.1f} {100 * entropy[t]:8.1f} {100 * individual[t]:11.1f}")
    avg = [statistics.fmean(d.values()) for d in (constant, oracle, entropy, individual)]
    print(f"{'average':20s} {100 * avg[0]:11.1f} {100 * avg[1]:8.1f} {100 * avg[2]:8.1f} {100 * avg[3]:11.1f}")
    gap = avg[3] - avg[0]
    print(f"share of the gap (individual - task arithmetic) recovered: oracle {(avg[1] - avg[0]) / gap:.0%}, "
          f"entropy-trained (lr {args.lr}, {args.steps} steps) {(avg[2] - avg[0]) / gap:.0%}")


if __name__ == "__main__":
    main()
