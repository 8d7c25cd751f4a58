"""How much of the experts' gain a simple average keeps on the built mini-vision suite, and why.

Run: ``python benchmarks/mini_vision_interference.py [--seed N]`` (builds the full variant if missing).

On the validation split (first 500 images per task): the pretrained model and the experts; the
simple average of all eight experts, of the six tasks of the previous design, of every
leave-one-out subset and of two pairs, each with the share of the experts' gain it recovers;
then the task vectors' norms and pairwise cosines; then, for task arithmetic at λ = 0.3, whether the
damage is in the merged features or in their fit to the fixed heads (each head's centre re-derived
from the merge's features of the same shots, and a fresh few-shot head) and which parameter group
carries it (the merge with one group kept at its pretrained value). ``docs/suites-mini.md`` and
``docs/results/mini.md`` quote seed 0.
"""
import argparse
import itertools
import statistics

import torch
from fusionbench_vision.mini.pool import MiniVisionModelPool

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0, help="expert seed of the full variant")
args = parser.parse_args()
torch.set_num_threads(2)
pool = MiniVisionModelPool(seed=args.seed)
b, prof = pool.builder, pool.profile
tasks = list(prof.tasks)
base = pool.load_model("_pretrained_").state_dict()
experts = {t: pool.load_model(t).state_dict() for t in tasks}
def acc(model, ts):
    return {t: b.evaluate(model, pool.head(t), b.task_arrays(prof, t, "validation", 500))["accuracy"] for t in ts}
def merged(subset, lam):
    sd = {k: (base[k] + lam * sum(experts[t][k] - base[k] for t in subset)) if base[k].is_floating_point() else base[k] for k in base}
    return pool.build_model(sd)
pre = acc(pool.load_model("_pretrained_"), tasks)
ind = {t: acc(pool.load_model(t), [t])[t] for t in tasks}
print("pre", round(statistics.fmean(pre.values()), 3), {t: round(v, 3) for t, v in pre.items()})
print("ind", round(statistics.fmean(ind.values()), 3), {t: round(v, 3) for t, v in ind.items()})
def report(name, subset, lam):
    a = acc(merged(subset, lam), subset)
    gain = statistics.fmean(a[t] - pre[t] for t in subset) / statistics.fmean(ind[t] - pre[t] for t in subset)
    print(f"{name} lam={lam:.3f}: avg {statistics.fmean(a.values()):.3f} (pre {statistics.fmean(pre[t] for t in subset):.3f}, ind {statistics.fmean(ind[t] for t in subset):.3f}) recovered {gain:.2f}", {t: round(v, 3) for t, v in a.items()}, flush=True)
report("all8 avg", tasks, 1 / 8)
old6 = ["mnist", "digits", "font_letters", "twemoji", "noto_emoji", "emoji_subcategory"]
report("old6 avg", old6, 1 / 6)
for t in tasks:
    sub = [u for u in tasks if u != t]
    report(f"without {t}", sub, 1 / 7)
for t in ["mnist", "twemoji"]:
    report(f"pair {t}+skin_tone", [t, "skin_tone"], 0.5)
# Task-vector geometry: norms and pairwise cosines.
vec = {t: torch.cat([(experts[t][k] - base[k]).flatten() for k in base if base[k].is_floating_point()]) for t in tasks}
print("norms", {t: round(float(v.norm()), 2) for t, v in vec.items()}, "base norm", round(float(torch.cat([base[k].flatten() for k in base if base[k].is_floating_point()]).norm()), 1))
for a_, b_ in itertools.combinations(tasks, 2):
    print(f"cos {a_}/{b_} {float(torch.nn.functional.cosine_similarity(vec[a_], vec[b_], dim=0)):.3f}", end="; ")
print()

# Features or fit: task arithmetic at λ = 0.3 scored with the fixed heads, with each head's centre re-derived
# from the merge's own features of the head's shots, and with a fresh few-shot head on the merge.
from fusionbench_core.suitekit.heads import CosineHead, cosine_head  # noqa: E402

heads = {t: pool.head(t) for t in tasks}
shots = {t: b.head_examples(prof, t) for t in tasks}
def fit(name, model):
    scores = []
    for t in tasks:
        feats = b.encode(model, shots[t])
        fresh = cosine_head(feats, shots[t].labels, shots[t].classes, float(heads[t].scale))
        recentred = CosineHead(fresh.centre, heads[t].class_vectors, float(heads[t].scale))
        val = b.task_arrays(prof, t, "validation", 500)
        mean_dir = torch.nn.functional.normalize(feats.double(), dim=1).mean(0)
        scores.append([b.evaluate(model, h, val)["accuracy"] for h in (heads[t], recentred, fresh)]
                      + [float(torch.nn.functional.cosine_similarity(mean_dir, heads[t].centre.double(), dim=0))])
    m = [statistics.fmean(s[i] for s in scores) for i in range(4)]
    print(f"{name}: fixed heads {m[0]:.3f}, centre re-derived {m[1]:.3f}, fresh few-shot head {m[2]:.3f}, "
          f"cos(mean feature direction, fixed centre) {m[3]:.3f}", flush=True)
def merged_keeping(lam, keep):
    sd = {k: (base[k] + lam * sum(experts[t][k] - base[k] for t in tasks)) if base[k].is_floating_point() and keep(k)
          else base[k] for k in base}
    return pool.build_model(sd)
fit("pretrained", pool.load_model("_pretrained_"))
fit("simple average", merged_keeping(1 / 8, lambda k: True))
fit("task arithmetic 0.3", merged_keeping(0.3, lambda k: True))
groups = {"embeddings": lambda k: "embeddings" not in k, "MLPs": lambda k: ".mlp." not in k,
          "attention": lambda k: "self_attn" not in k, "layer norms": lambda k: "norm" not in k,
          "biases": lambda k: not k.endswith("bias")}
for group, keep in groups.items():
    fit(f"task arithmetic 0.3, {group} kept pretrained", merged_keeping(0.3, keep))
