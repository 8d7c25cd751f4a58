"""Results of the mini suites: pretrained, experts and every installed method, mean ± std over 3 expert seeds.

One command, on any machine with the data sources installed::

    python benchmarks/mini_results.py                      # build seeds 0-2, evaluate, write docs/results/mini.md

On a machine without the sources (a GPU box), in three steps::

    python benchmarks/mini_results.py export .device-data  # here: task arrays + pretrained + heads
    python benchmarks/mini_results.py run --data .device-data --out results.json   # there
    python benchmarks/mini_results.py render results.json  # here: write docs/results/mini.md

On a CPU, mini-text's full protocol takes hours per seed (about 2 minutes per scored backbone on 2
cores); ``--validation-sweep --val-examples 200 --methods ...`` is the cheaper protocol used for
``docs/results/mini.md``: λ swept on validation only, the selected λ and every other row on test.

For every suite and seed: the pretrained model (each task scored with its fixed cosine head, derived from the
pretrained features), each expert on its own task ("individual"), and every installed fusion
method at its defaults; task arithmetic and TIES also over a λ sweep 0.1…1.0, their headline row
taking the λ with the best mean *validation* accuracy. Methods that fail are listed with their
error. Accuracies are on the test splits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [round(0.1 * i, 1) for i in range(1, 11)]
SWEPT = {"task_arithmetic": "scaling_factor", "ties": "scaling_factor"}
SUITES = ("mini-vision", "mini-text")
VAL_EXAMPLES = 500


def suite_modules(suite: str):
    """(build module, pool module, text?) of a suite."""
    if suite == "mini-vision":
        from fusionbench_vision.mini import build, pool

        return build, pool, False
    from fusionbench_nlp.mini import build, pool

    return build, pool, True


def arrays(builder, task: str, split: str, limit: int | None = None):
    """A split of a task as the suite's arrays, tokenised for the full variant where that matters."""
    return builder.task_arrays(builder.profile_for(False), task, split, limit)


# --------------------------------------------------------------------------- export / import of arrays


def export(directory: Path, suites: list[str]) -> None:
    """Write compact task arrays, pretrained weights and heads for a machine without the sources."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    directory.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        build, _, text = suite_modules(suite)
        builder = build.BUILDER
        profile = builder.profile_for(False)
        builder.build(profile, 0, stop_after=0)  # pretrained + heads only
        out = directory / suite
        out.mkdir(exist_ok=True)
        used: set[int] = set()
        for task in profile.tasks:
            for split, limit in (("train", profile.train_examples), ("validation", VAL_EXAMPLES), ("test", None)):
                a = arrays(builder, task, split, limit)
                if text:
                    np.savez_compressed(out / f"{task}.{split}.npz", input_ids=a.input_ids, token_type_ids=a.token_type_ids,
                                        lengths=a.lengths, labels=a.labels, classes=a.classes)
                    for row, n in zip(a.input_ids, a.lengths):
                        used.update(row[:n].tolist())
                else:
                    np.savez_compressed(out / f"{task}.{split}.npz", images=a.images, labels=a.labels, classes=a.classes)
        src = builder.suite_dir(profile)
        shutil.copytree(src / "heads", out / "heads", dirs_exist_ok=True)
        pre = out / "pretrained"
        pre.mkdir(exist_ok=True)
        for name in os.listdir(src / "pretrained"):
            if name != "model.safetensors" or not text:
                shutil.copyfile(src / "pretrained" / name, pre / name)
        if text:  # 64 MiB travel limit: word-embedding rows of the tokens the tasks use, in float16
            state = load_file(str(src / "pretrained" / "model.safetensors"))
            ids = torch.tensor(sorted(used))
            words = state.pop("embeddings.word_embeddings.weight")
            state["word_rows"] = words[ids].to(torch.float16).contiguous()
            state["word_ids"] = ids
            state["vocab_size"] = torch.tensor(words.shape[0])
            save_file(state, str(pre / "compact.safetensors"))
        print(f"exported {suite} to {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB)")


def exported_builder(directory: Path, suite: str):
    """A suite's builder on exported arrays, its cache seeded with the exported pretrained model and heads."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    build, _, text = suite_modules(suite)
    src = directory / suite
    if text:
        def source(task, split, max_len):
            z = np.load(src / f"{task}.{split}.npz")
            return build.TextArrays(z["input_ids"], z["token_type_ids"], z["lengths"], z["labels"], int(z["classes"]))
    else:
        def source(task, split):
            z = np.load(src / f"{task}.{split}.npz")
            return build.TaskArrays(z["images"], z["labels"], int(z["classes"]))
    builder = build.MiniTextBuilder(data_source=source) if text else build.MiniVisionBuilder(data_source=source)
    profile = builder.profile_for(False)
    target = builder.suite_dir(profile)
    if not (target / "pretrained" / "model.safetensors").exists():
        shutil.copytree(src / "heads", target / "heads", dirs_exist_ok=True)
        tmp = target / ".pretrained-import"
        shutil.copytree(src / "pretrained", tmp, dirs_exist_ok=True)
        if text:
            state = load_file(str(tmp / "compact.safetensors"))
            rows, ids, vocab = state.pop("word_rows"), state.pop("word_ids"), int(state.pop("vocab_size"))
            words = torch.zeros(vocab, rows.shape[1])
            words[ids] = rows.float()
            state["embeddings.word_embeddings.weight"] = words
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "compact.safetensors").unlink()
        os.rename(tmp, target / "pretrained")
    return builder


# --------------------------------------------------------------------------- measuring


def accuracy_on(builder, model, tasks: list[str], split: str, pool) -> dict[str, float]:
    """Accuracy of a (fused) backbone on several tasks, each with its own head."""
    import torch

    cap = builder.profile_for(False).test_examples  # what the suite's task pool scores
    limit = min(VAL_EXAMPLES, cap or VAL_EXAMPLES) if split == "validation" else cap
    batch = 1024 if torch.cuda.is_available() else builder.eval_batch_size
    return {t: builder.evaluate(model, pool.head(t), arrays(builder, t, split, limit), batch)["accuracy"] for t in tasks}


def measure_seed(suite: str, seed: int, methods: list[tuple[str, Any]], log, *, builder=None,
                 validation_sweep: bool = False, reference_rows: bool = True) -> dict[str, Any]:
    """Build one seed's experts and score every row on it.

    ``validation_sweep`` is the cheaper protocol for a CPU (mini-text's full protocol is hours there):
    swept settings are scored on validation only and only the selected one on test, the methods'
    unswept defaults are skipped for swept methods, and every other row is scored on test only.
    Without ``reference_rows`` the pretrained and individual rows are left out (to add methods to an
    earlier run's results with :func:`merge_results`). ``builder`` is the suite's builder (default:
    its own, on the packaged data).
    """
    import torch
    from fusionbench_core.engine.devices import resolve_device

    build, pool_mod, _ = suite_modules(suite)
    builder = builder or build.BUILDER
    profile = builder.profile_for(False)
    start = time.perf_counter()
    summary = builder.build(profile, seed)
    built_s = time.perf_counter() - start
    log(f"{suite} seed {seed}: built in {built_s:.0f} s ({summary['experts']})")
    pool_cls = pool_mod.MiniVisionModelPool if suite == "mini-vision" else pool_mod.MiniTextModelPool
    pool = pool_cls(seed=seed, builder=builder)
    dev = resolve_device("auto")
    tasks = list(profile.tasks)
    rows: dict[str, dict[str, Any]] = {}
    plain_splits = ("test",) if validation_sweep else ("test", "validation")

    def score(name: str, model, hyperparameters: dict | None = None, fuse_s: float = 0.0,
              splits: tuple[str, ...] = plain_splits) -> None:
        model = model.to(dev) if hasattr(model, "to") else model
        t0 = time.perf_counter()
        row = rows.setdefault(name, {"hyperparameters": hyperparameters or {}, "fuse_s": round(fuse_s, 2)})
        if hasattr(model, "parameters"):  # the fused model's size (mixing and ensembles grow it)
            row["parameters"] = sum(p.numel() for p in model.parameters())
        for split in splits:
            row[split] = accuracy_on(builder, model, tasks, split, pool)
        row["eval_s"] = round(row.get("eval_s", 0.0) + time.perf_counter() - t0, 2)
        shown = {split: 100 * statistics.fmean(row[split].values()) for split in splits}
        log(f"  {suite} seed {seed} {name}: " + ", ".join(f"{k} avg {v:.1f}" for k, v in shown.items())
            + f", fuse {fuse_s:.1f} s, eval {row['eval_s']:.1f} s")

    if reference_rows:
        score("pretrained", pool.load_model("_pretrained_"))
        individual: dict[str, Any] = {split: {} for split in plain_splits}
        for task in tasks:
            expert = pool.load_model(task).to(dev)
            for split in plain_splits:
                individual[split].update(accuracy_on(builder, expert, [task], split, pool))
        rows["individual"] = {**individual, "hyperparameters": {}}
    for name, cls in methods:
        swept = name in SWEPT
        # The default is always scored (on test, under the validation-sweep protocol): it is what a plain `fb run` gives.
        settings = [{}] + ([{SWEPT[name]: lam} for lam in SWEEP] if swept else [])
        fused_models: dict[str, Any] = {}
        for hp in settings:
            label = name if not hp else f"{name}@{hp[SWEPT[name]]}"
            try:
                algorithm = cls(**hp)
                algorithm.seed = seed
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                fused = algorithm.run(pool)
                in_sweep = bool(hp) and validation_sweep
                score(label, fused, getattr(algorithm, "settings", hp), time.perf_counter() - t0,
                      ("validation",) if in_sweep else plain_splits)
                if getattr(algorithm, "cost", None):  # the method's own cost report (passes, steps, parameters)
                    rows[label]["cost"] = algorithm.cost
                if in_sweep:
                    fused_models[label] = fused
            except Exception as exc:  # noqa: BLE001 - a failing method is reported, not fatal
                message = str(exc).splitlines()[0].split(". ")[0] if str(exc) else ""
                rows[label] = {"error": f"{type(exc).__name__}: {message}"}
                log(f"  {label}: {rows[label]['error']}")
                if os.environ.get("FB_DEBUG") == "1":
                    traceback.print_exc()
        if fused_models:
            chosen = max(fused_models, key=lambda label: statistics.fmean(rows[label]["validation"].values()))
            score(chosen, fused_models[chosen], rows[chosen]["hyperparameters"], rows[chosen]["fuse_s"], ("test",))
    return {"build_s": round(built_s, 1), "rows": rows, "build": summary,
            "protocol": "validation-sweep" if validation_sweep else "full", "validation_examples": VAL_EXAMPLES}


def _read_results(path: Path) -> dict[str, Any]:
    """A result file written by ``run``; a one-line exit when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: not a readable result file ({exc.__class__.__name__})") from None


def merge_results(base: Path, additions: list[Path], output: Path) -> None:
    """Add the rows of ``additions`` (same suites and seeds, e.g. a ``--skip-reference`` run) to ``base``.

    A row of ``base`` is replaced only where it is missing or records an error; measured rows are kept.
    """
    merged = _read_results(base)
    for path in additions:
        extra = _read_results(path)
        merged["methods"].update(extra["methods"])
        for suite, seeds in extra["suites"].items():
            for seed, result in seeds.items():
                target = merged["suites"].get(suite, {}).get(seed)
                if target is None:
                    raise SystemExit(f"{path}: {suite} seed {seed} is not in {base}")
                for label, row in result["rows"].items():
                    if label not in target["rows"] or "error" in target["rows"][label]:
                        target["rows"][label] = row
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    os.replace(tmp, output)
    print(f"wrote {output}")


def installed_methods() -> list[tuple[str, Any, str]]:
    from fusionbench_core.plugins import get_host

    out = []
    for entry in get_host().registry("method").entries():
        try:
            cls = entry.load()
        except Exception as exc:  # noqa: BLE001
            print(f"skipping method {entry.name}: {exc}", file=sys.stderr)
            continue
        requirement = getattr(getattr(cls, "requirement", None), "value", "data-free")
        out.append((entry.name, cls, requirement))
    return out


def run(args) -> Path:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    methods = installed_methods()
    if args.methods:
        methods = [m for m in methods if m[0] in args.methods]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    results: dict[str, Any] = {"device": device, "torch": torch.__version__, "seeds": args.seeds,
                               "methods": {n: r for n, _, r in methods}, "suites": {}}
    out = Path(args.out)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for suite in args.suites:
        builder = exported_builder(Path(args.data), suite) if args.data else None
        results["suites"][suite] = {}
        for seed in args.seeds:
            results["suites"][suite][str(seed)] = measure_seed(suite, seed, [(n, c) for n, c, _ in methods], log,
                                                               builder=builder,
                                                               validation_sweep=args.validation_sweep,
                                                               reference_rows=not args.skip_reference)
            out.write_text(json.dumps(results, indent=1))
    out.write_text(json.dumps(results, indent=1))
    return out


# --------------------------------------------------------------------------- rendering


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def render(paths: list[Path], output: Path, notes: list[str] = ()) -> None:
    merged: dict[str, Any] = {"suites": {}, "devices": set(), "methods": {}}
    for path in paths:
        data = json.loads(Path(path).read_text())
        merged["devices"].add(data["device"])
        merged["methods"].update(data["methods"])
        for suite, seeds in data["suites"].items():
            merged["suites"].setdefault(suite, {}).update(seeds)
    lines = ["# Mini suites: results", "",
             "Produced by `python benchmarks/mini_results.py` (see its docstring for the GPU route). "
             f"Device: {', '.join(sorted(merged['devices']))}. Accuracy on the test splits in %, mean ± std over "
             "the expert-training seeds; the pretrained model (and, for mini-vision, its Fashion-MNIST pretraining) "
             "is shared by all seeds. *individual*: each expert on its own task. Task arithmetic and TIES: the λ "
             "with the best mean validation accuracy per seed (λ in brackets, most frequent); the full sweep is below. "
             "Other methods at their default hyperparameters.", ""]
    for note in notes:
        lines += [f"> {note}", ""]
    for suite, seeds in merged["suites"].items():
        lines += _suite_section(suite, seeds, merged["methods"])
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, output)
    print(f"wrote {output}")


def _suite_section(suite: str, seeds: dict[str, Any], methods: dict[str, str]) -> list[str]:
    first = next(iter(seeds.values()))
    tasks = list(first["rows"]["pretrained"]["test"])
    seed_ids = sorted(seeds, key=int)
    build, _, _ = suite_modules(suite)
    profile = build.PROFILES["full"]
    settings = ", ".join(f"{k}={v}" for k, v in vars(profile).items() if k not in ("name", "tasks", "tiny_backbone"))
    lines = [f"## {suite}", "", f"Full variant `{profile.name}-{profile.fingerprint()}` ({settings}). "
             f"Seeds measured: {', '.join(seed_ids)}. Build time per seed in this run on the device above "
             "(pretrained model and heads cached; experts already in the cache are not retrained): "
             + ", ".join(f"{seeds[s]['build_s']:.0f} s" for s in seed_ids) + ".", ""]

    def row_values(label_of_seed, split: str = "test") -> tuple[dict[str, list[float]], list[float]]:
        per_task: dict[str, list[float]] = {t: [] for t in tasks}
        means: list[float] = []
        for s in seed_ids:
            label = label_of_seed(s)
            row = seeds[s]["rows"].get(label) if label else None
            if not row or split not in row:
                continue
            for t in tasks:
                per_task[t].append(row[split][t])
            means.append(statistics.fmean(row[split][t] for t in tasks))
        return per_task, means

    def best(name: str, s: str) -> str | None:
        candidates = [(statistics.fmean(r["validation"].values()), label) for label, r in seeds[s]["rows"].items()
                      if label.startswith(name + "@") and "validation" in r]
        return max(candidates)[1] if candidates else None

    table = ["| method | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    averages: dict[str, float] = {}
    per_seed: dict[str, dict[str, float]] = {}

    def add(title: str, label_of_seed) -> None:
        per_task, means = row_values(label_of_seed)
        if not means:
            return
        averages[title] = statistics.fmean(means)
        per_seed[title] = {s: statistics.fmean(seeds[s]["rows"][label_of_seed(s)]["test"][t] for t in tasks)
                           for s in seed_ids if label_of_seed(s) and "test" in seeds[s]["rows"].get(label_of_seed(s), {})}
        table.append(f"| {title} | " + " | ".join(_ms(per_task[t]) for t in tasks) + f" | **{_ms(means)}** |")

    add("pretrained", lambda s: "pretrained")
    add("individual", lambda s: "individual")
    failures = []
    for name in sorted(methods):
        if name in SWEPT:
            chosen = [best(name, s) for s in seed_ids]
            lams = [c.split("@")[1] for c in chosen if c]
            top = max((lams.count(v) for v in lams), default=0)
            lam = "/".join(sorted({v for v in lams if lams.count(v) == top}, key=float)) if lams else "?"
            add(f"{name} (λ={lam}, val-selected)", lambda s, n=name: best(n, s))
            add(f"{name} (default)", lambda s, n=name: n)
        else:
            add(name, lambda s, n=name: n)
        errors = {seeds[s]["rows"].get(name, {}).get("error") for s in seed_ids} - {None}
        if errors:
            failures.append(f"- `{name}`: {'; '.join(sorted(e.split('. ')[0] for e in errors))}")
    lines += table + [""]
    validation_sweep = any(seeds[s].get("protocol") == "validation-sweep" for s in seed_ids)
    sweep_split = "validation" if validation_sweep else "test"
    sweep = ["| λ | " + " | ".join(f"{n} avg" for n in SWEPT if n in methods) + " |",
             "|---" * (1 + sum(n in methods for n in SWEPT)) + "|"]
    for lam in SWEEP:
        cells = []
        for name in SWEPT:
            if name in methods:
                cells.append(_ms(row_values(lambda s, n=name: f"{n}@{lam}", sweep_split)[1]))
        sweep.append(f"| {lam} | " + " | ".join(cells) + " |")
    if validation_sweep:
        examples = seeds[seed_ids[0]].get("validation_examples", VAL_EXAMPLES)
        lines += [f"λ sweep (validation average, first {examples} validation examples per task; only the selected "
                  "λ was scored on test):", ""] + sweep + [""]
    else:
        lines += ["λ sweep (test average):", ""] + sweep + [""]
    lines += _orderings(averages, per_seed, methods)
    lines += _cost_table(seeds, seed_ids, methods)
    if failures:
        lines += ["", "Methods that failed on this suite:", ""] + failures
    return lines + [""]


def _cost_table(seeds: dict[str, Any], seed_ids: list[str], methods: dict[str, str]) -> list[str]:
    """Size and time of each method's fused model: parameters against one model, fusion and scoring seconds."""
    dense = [seeds[s]["rows"]["pretrained"].get("parameters") for s in seed_ids]
    dense = next((d for d in dense if d), None)
    if not dense:
        return []
    out = ["", "Cost per method (mean over seeds): the fused model's parameters against one pretrained model "
           "(ensembles keep every expert; mixing methods add experts and routers), seconds to fuse (statistics, "
           "test-time adaptation or routing included) and to score the test split, and the adaptation steps a "
           "method reports, with the forward and backward passes (per example) it counted.", "",
           "| method | parameters (× one model) | fuse s | eval s | adaptation steps | forward passes | backward passes |",
           "|---|---|---|---|---|---|---|"]
    for name in sorted(methods):
        rows = [seeds[s]["rows"].get(name) for s in seed_ids]
        rows = [r for r in rows if r and "parameters" in r]
        if not rows:
            continue
        steps = {str((r.get("cost") or {}).get("adaptation_steps", (r.get("cost") or {}).get("steps", "–"))) for r in rows}
        # A mixing method's own count includes its buffers (WEMoE's task vectors); nn.Module.parameters() does not.
        ratios = [r["cost"]["parameter_ratio"] if (r.get("cost") or {}).get("parameter_ratio") else r["parameters"] / dense
                  for r in rows]
        out.append(f"| {name} | {statistics.fmean(ratios):.2f} | "
                   f"{statistics.fmean(r.get('fuse_s', 0.0) for r in rows):.1f} | "
                   f"{statistics.fmean(r.get('eval_s', 0.0) for r in rows):.1f} | {'/'.join(sorted(steps))} | "
                   f"{_passes(rows, 'forward_passes')} | {_passes(rows, 'backward_passes')} |")
    return out


def _passes(rows: list[dict[str, Any]], key: str) -> str:
    """The mean of a counted pass over rows that report it, or a dash."""
    values = [r["cost"][key] for r in rows if isinstance(r.get("cost"), dict) and key in r["cost"]]
    return f"{statistics.fmean(values):,.0f}" if values else "–"


def _is_ensemble(name: str) -> bool:
    """Ensembles and predictors keep every expert: they are not merges."""
    return "ensemble" in name or "predictor" in name


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (intervals over seeds)."""

ORDERINGS = (
    ("task_arithmetic", "simple_average", ">"),
    ("ties", "task_arithmetic", ">="),
    ("regmean", "task_arithmetic", ">"),
    ("layer_wise_adamerging", "task_arithmetic", ">"),
    ("simple_ensemble", "simple_average", ">="),
)
"""The orderings the field reports: (method, reference, relation)."""


def _interval(differences: list[float]) -> str:
    """Mean difference with its 95 % interval over seeds (Student's t), in points."""
    mean = 100 * statistics.fmean(differences)
    if len(differences) < 2:
        return f"{mean:+.1f} (one seed, no interval)"
    half = 100 * T_975[len(differences) - 1] * statistics.stdev(differences) / len(differences) ** 0.5
    return f"{mean:+.1f} points, 95 % interval [{mean - half:+.1f}, {mean + half:+.1f}]"


def _orderings(averages: dict[str, float], per_seed: dict[str, dict[str, float]], methods: dict[str, str]) -> list[str]:
    pre, ind = averages.get("pretrained"), averages.get("individual")
    merges = {k: v for k, v in averages.items() if k not in ("pretrained", "individual")
              and methods.get(k.split(" ")[0], "") == "data-free" and not _is_ensemble(k)}
    out = ["Orderings the field reports, on the test averages (differences paired by seed; the interval is over "
           "seeds, Student's t; task arithmetic and TIES at their validation-selected λ):", ""]
    if pre is not None and ind is not None and merges:
        best_name = max(merges, key=merges.get)
        below = [k for k, v in merges.items() if not pre < v < ind]
        out.append(f"- individual > merged > pretrained: {'holds for every data-free merge' if not below else 'holds except for ' + ', '.join(below)} "
                   f"(individual {100 * ind:.1f}, best data-free merge {best_name} {100 * merges[best_name]:.1f}, "
                   f"pretrained {100 * pre:.1f}).")

    def key_of(name: str) -> str | None:
        if name in SWEPT:
            return next((k for k in averages if k.startswith(name + " (λ")), None)
        return name if name in averages else None

    for name, reference, relation in ORDERINGS:
        a, b = key_of(name), key_of(reference)
        if a is None or b is None:
            out.append(f"- {name} {relation} {reference}: not measured here.")
            continue
        seeds = sorted(set(per_seed[a]) & set(per_seed[b]), key=int)
        diffs = [per_seed[a][s] - per_seed[b][s] for s in seeds]
        mean = statistics.fmean(diffs)
        holds = mean > 0 if relation == ">" else mean >= 0
        out.append(f"- {name} {relation} {reference}: {'holds' if holds else 'does not hold'}, "
                   f"{_interval(diffs)} ({100 * averages[a]:.1f} vs {100 * averages[b]:.1f}).")
    return out


def main() -> None:
    global VAL_EXAMPLES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p_export = sub.add_parser("export", help="write arrays, pretrained weights and heads for another machine")
    p_export.add_argument("directory", type=Path)
    p_export.add_argument("--suites", nargs="+", default=list(SUITES))
    p_run = sub.add_parser("run", help="build the seeds and evaluate every method; writes JSON")
    p_merge = sub.add_parser("merge", help="add the method rows of other result files to a base result file")
    p_merge.add_argument("base", type=Path, help="result JSON whose measured rows are kept")
    p_merge.add_argument("additions", nargs="+", type=Path, help="result JSON files with rows to add")
    p_merge.add_argument("-o", "--output", type=Path, required=True, help="merged result JSON to write")
    p_render = sub.add_parser("render", help="write the markdown table from result JSON files")
    p_render.add_argument("results", nargs="+", type=Path)
    p_render.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "mini.md")
    p_render.add_argument("--note", action="append", default=[], help="a paragraph to add under the introduction")
    for p in (parser, p_run):
        p.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
        p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        p.add_argument("--methods", nargs="*", help="only these methods (default: every installed one)")
        p.add_argument("--data", help="directory written by `export` (instead of the packaged sources)")
        p.add_argument("--out", default="mini-results.json", help="result JSON path")
        p.add_argument("--validation-sweep", action="store_true",
                       help="cheaper CPU protocol: λ sweeps scored on validation only, other rows on test only")
        p.add_argument("--val-examples", type=int, default=VAL_EXAMPLES, help="validation examples per task")
        p.add_argument("--skip-reference", action="store_true",
                       help="leave out the pretrained and individual rows (when adding methods to earlier results)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "mini.md")
    args = parser.parse_args()
    VAL_EXAMPLES = getattr(args, "val_examples", VAL_EXAMPLES)
    if args.command == "export":
        export(args.directory, args.suites)
    elif args.command == "run":
        run(args)
    elif args.command == "merge":
        merge_results(args.base, args.additions, args.output)
    elif args.command == "render":
        render(args.results, args.output, args.note)
    else:
        render([run(args)], args.output)


if __name__ == "__main__":
    main()
