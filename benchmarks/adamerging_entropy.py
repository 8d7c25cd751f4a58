"""Does low prediction entropy mean high accuracy on a suite? AdaMerging assumes so.

AdaMerging picks merge coefficients that minimise the mean prediction entropy on unlabelled test
inputs. It can only beat task arithmetic where lower entropy goes with higher accuracy. This script
measures both along task arithmetic's λ path, through the pool's own ``batches`` and ``logits``
(any data model pool), and then runs task-wise AdaMerging and prints the λ it learned::

    python benchmarks/adamerging_entropy.py --pool mini-vision
    python benchmarks/adamerging_entropy.py --pool mini-text --examples 200 --steps 100

Columns: λ, mean entropy (nats, averaged over tasks), mean test accuracy, and the Spearman rank
correlation between −entropy and accuracy over the path (1: entropy ranks λ exactly as accuracy does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")


def entropy_and_accuracy(pool, model, tasks, request, batch_size):
    """Mean entropy and accuracy per task of ``model`` on the requested labelled inputs."""
    import torch

    from fusionbench_data_methods.coefficient_merger import entropy

    out = {}
    with torch.no_grad():
        for task in tasks:
            total_h = correct = n = 0.0
            for inputs, labels in pool.batches(task, request, batch_size=batch_size):
                logits = pool.logits(task, model, inputs).float()
                total_h += entropy(logits).sum().item()
                correct += (logits.argmax(-1).cpu() == labels.cpu()).sum().item()
                n += len(labels)
            out[task] = (total_h / n, correct / n)
    return out


def ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    for rank, index in enumerate(order):
        result[index] = float(rank)
    return result


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="mini-vision")
    parser.add_argument("--seed", type=int, default=0, help="expert-training seed of the pool")
    parser.add_argument("--examples", type=int, default=None, help="test inputs per task (default: all)")
    parser.add_argument("--steps", type=int, default=500, help="AdaMerging steps")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from fusionbench_core.plugins import get_host
    from fusionbench_core.protocols import DataRequest

    host = get_host()
    pool = host.registry("modelpool").get(args.pool)(seed=args.seed)
    methods = host.registry("method")
    tasks = list(pool.model_names)
    request = DataRequest(split="test", examples=args.examples, labelled=True)
    path = []
    print("| λ | mean entropy (nats) | mean accuracy % |\n|---|---|---|")
    for lam in [round(0.1 * i, 1) for i in range(0, 11)]:
        model = methods.get("task_arithmetic")(scaling_factor=lam).run(pool)
        scores = entropy_and_accuracy(pool, model, tasks, request, args.batch_size)
        h = statistics.fmean(v[0] for v in scores.values())
        acc = statistics.fmean(v[1] for v in scores.values())
        path.append((lam, h, acc))
        print(f"| {lam} | {h:.3f} | {100 * acc:.1f} |", flush=True)
    rho = spearman([-h for _, h, _ in path], [a for _, _, a in path])
    print(f"\nSpearman(−entropy, accuracy) over the λ path: {rho:+.2f}")
    best = max(path, key=lambda p: p[2])
    flattest = min(path, key=lambda p: p[1])
    print(f"most accurate λ {best[0]} ({100 * best[2]:.1f} %); lowest-entropy λ {flattest[0]} ({100 * flattest[2]:.1f} %)")
    start = time.perf_counter()
    algorithm = methods.get("task_wise_adamerging")(steps=args.steps, examples=args.examples)
    model = algorithm.run(pool)
    scores = entropy_and_accuracy(pool, model, tasks, request, args.batch_size)
    lams = ", ".join(f"{t} {v:.2f}" for t, v in zip(tasks, algorithm.coefficients[:, 0].tolist()))
    print(f"task-wise AdaMerging ({args.steps} steps, {time.perf_counter() - start:.0f} s): λ = {lams}; "
          f"mean entropy {statistics.fmean(v[0] for v in scores.values()):.3f}, "
          f"accuracy {100 * statistics.fmean(v[1] for v in scores.values()):.1f} %", file=sys.stdout)


if __name__ == "__main__":
    main()
