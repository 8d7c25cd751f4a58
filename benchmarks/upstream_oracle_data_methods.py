#!/usr/bin/env python
"""Upstream FusionBench as an oracle for the data methods, on the tiny CLIP fixture (issue #23).

One command from a fresh clone (after ``make setup``)::

    flock /tmp/fb-torch.lock python benchmarks/upstream_oracle_data_methods.py
    python benchmarks/upstream_oracle_data_methods.py --methods regmean,fisher_merging --steps 3

It builds the tiny CLIP fixture of the tests (``fusionbench_vision.testing``: random CLIP
checkpoints under the ViT-B/32 TA8 hub ids, a few random images per task) under ``--workdir``, runs
each method here and upstream FusionBench's CLIP implementation of it in a virtual environment of its
own (``--venv``, created on first use with ``pip install torch==2.13.0 fusion-bench``, torch pinned in
the same command), on the same checkpoints, images and class names (``classnames=upstream``), and
prints the largest absolute difference of the merged weights, next to the largest distance of either
from the simple average (the size a real disagreement would have).

Settings are chosen so that both see the same data whatever their sampling: statistics over every
training image of a task in one batch, adaptation batches that hold the whole test split, so
upstream's shuffled loaders draw the same set at every step. Our side runs with the options that
reproduce upstream (``docs/methods.md``'s disagreements table): Fisher with
``fisher_statistic=upstream normalize=true min_fisher=1e-6``, AdaMerging with ``clamp=none``, WEMoE
with ``batch_reduce=true``. WEMoE's routers are drawn at random by each implementation; upstream's are
overwritten with ours (from our run with 0 steps) before its adaptation, so both start equal.

Where upstream 0.2.33 itself breaks, and what this script does about it:

* its CLIP WEMoE reads ``model.vision_model.encoder``, which transformers 5's flat ``CLIPVisionModel`` lacks
  (AttributeError): its venv gets transformers 4.57, and its tensor names lose ``vision_model.`` here;
* ``task_arithmetic_merge`` (WEMoE's starting merge) adds ``Parameter``s to ``Tensor``s under a strict
  check that requires one type (TypeError): it is called with ``strict=False``, the same sum;
* task-wise AdaMerging makes its Lightning fabric only when CUDA is present, and on a CPU stops at its
  first backward (AttributeError on ``None``): it is given one;
* the zero-shot heads do not truncate prompts to the text tower's positions, so the tiny fixture's
  byte-level tokenizer overflows 77 positions on long prompts (GTSRB, EuroSAT): TASKS avoids them.

Measured (2 CPU cores, about 17 s once the venv exists; ``--steps 10``): RegMean 1.7e-5 (relative 1.6e-4),
Fisher 6.7e-6 (1.4e-4), task-wise AdaMerging 1.2e-7 (8e-5), layer-wise 5.8e-7 (4e-4), WEMoE 1.2e-7 (1.2e-4,
routers included). With ``fisher_statistic=exact`` instead, Fisher is 1.7 apart: the check can fail.

Exit status: 0 when every method agrees (``--rtol``), 1 otherwise, 2 when upstream cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

TASKS = ["mnist", "svhn", "dtd"]
"""Three tasks of the TA8 suite whose prompts fit the tiny text tower's 77 positions as bytes (upstream does
not truncate them)."""
SUITE = "clip-vit-b32-ta8"
METHODS = ("regmean", "fisher_merging", "task_wise_adamerging", "layer_wise_adamerging", "wemoe")
TRAIN, TEST = 8, 12
"""Images per task in the fixture's train and test splits."""


# -- upstream's environment --------------------------------------------------------------------------------


INSTALL = ["torch==2.13.0", "fusion-bench==0.2.33", "transformers==4.57.*"]
"""Upstream's environment, in one pip command: torch pinned (else pip resolves a multi-GB CUDA build), and
transformers 4, because 0.2.33's CLIP WEMoE reads ``model.vision_model.encoder``, which transformers 5's
flat ``CLIPVisionModel`` lacks (AttributeError)."""
READY = "import fusion_bench, transformers; assert transformers.__version__.startswith('4.57')"


def ensure_venv(venv: Path) -> Path:
    """``venv``'s python, after creating the venv and installing :data:`INSTALL` into it when needed."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", READY], capture_output=True).returncode == 0:
        return python
    print(f"==> {venv}: pip install {' '.join(INSTALL)}", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *INSTALL])
    if done.returncode != 0:
        print("Error: could not install upstream FusionBench (pip's output is above)", file=sys.stderr)
        raise SystemExit(2)
    return python


# -- the fixture and our side -------------------------------------------------------------------------------


def build_fixture(workdir: Path) -> tuple[Path, Path]:
    """The tiny CLIP models (every TA8 expert) and the TASKS' images under ``workdir``; returns the roots."""
    from fusionbench_vision.suites import SUITES
    from fusionbench_vision.testing import build_data_root, build_model_root

    models, data = workdir / "models", workdir / "data"
    build_model_root(models, SUITES[SUITE])
    build_data_root(data, TASKS, test_examples=TEST, train_examples=TRAIN)
    return models, data


def our_settings(steps: int) -> dict[str, dict]:
    """Each method's settings here, those that reproduce upstream's defaults on this fixture."""
    adaptation = {"steps": steps, "lr": 1e-3, "init_lambda": 0.3, "clamp": "none", "batch_size": 16, "device": "cpu"}
    return {
        "regmean": {"alpha": 0.95, "examples": TRAIN, "batch_size": TRAIN, "cache": False},
        "fisher_merging": {"examples": TRAIN, "batch_size": TRAIN, "fisher_statistic": "upstream", "normalize": True,
                           "min_fisher": 1e-6, "cache": False},
        "task_wise_adamerging": adaptation,
        "layer_wise_adamerging": adaptation,
        "wemoe": {"steps": steps, "lr": 1e-4, "init_lambda": 0.3, "scaling_factor": 0.3, "batch_size": 16,
                  "batch_reduce": True, "device": "cpu"},
    }


def run_ours(methods: list[str], steps: int, out: Path) -> None:
    """Run each method here and save its merged state (and WEMoE's initial routers) under ``out``."""
    import torch
    from safetensors.torch import save_file

    from fusionbench_core.plugins import get_host
    from fusionbench_vision.modelpool import CLIPVisionModelPool

    out.mkdir(parents=True, exist_ok=True)
    host = get_host()
    settings = our_settings(steps)

    def pool():
        return CLIPVisionModelPool(SUITE, tasks=TASKS, classnames="upstream", device="cpu")

    def save(state: dict, name: str) -> None:
        save_file({k: v.detach().float().contiguous() for k, v in state.items() if v.is_floating_point()},
                  str(out / f"{name}.safetensors"))

    simple = host.registry("method").get("simple_average")().run(pool())
    save(simple.state_dict(), "simple_average")
    for name in methods:
        cls = host.registry("method").get(name)
        torch.manual_seed(0)
        if "steps" in settings[name]:  # the starting point: how far training moves sets the scale of a gap
            start = cls(**{**settings[name], "steps": 0}).run(pool())
            save(start.state_dict(), f"{name}_start")
            if name == "wemoe":
                save({k: v for k, v in start.state_dict().items() if ".router." in k}, "wemoe_routers")
        model = cls(**settings[name]).run(pool())
        save(model.state_dict(), name)
        print(f"ours: {name} done", file=sys.stderr)


# -- upstream's side (runs in its venv) ---------------------------------------------------------------------

UPSTREAM = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import datasets
    import lightning as L
    import torch
    from omegaconf import DictConfig
    from safetensors.torch import load_file, save_file

    from fusion_bench.modelpool import CLIPVisionModelPool

    workdir, methods, steps, tasks, suite = Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), \\
        sys.argv[4].split(","), json.loads(sys.argv[5])
    out = workdir / "upstream"
    out.mkdir(parents=True, exist_ok=True)
    (workdir / "upstream-cache").mkdir(exist_ok=True)
    models, data = workdir / "models", workdir / "data"

    class Pool(CLIPVisionModelPool):
        """Upstream's CLIP pool on the fixture's save_to_disk datasets."""

        def _split(self, task, split):
            return datasets.load_from_disk(str(data / suite["datasets"][task]))[split]

        def load_train_dataset(self, name, *args, **kwargs):
            return self._split(name, "train")

        def load_test_dataset(self, name, *args, **kwargs):
            return self._split(name, "test")

    def pool():
        paths = {"_pretrained_": str(models / suite["pretrained"])}
        paths.update({task: str(models / suite["experts"][task]) for task in tasks})
        return Pool(DictConfig(paths), processor=paths["_pretrained_"],
                    train_datasets=DictConfig({t: t for t in tasks}), test_datasets=DictConfig({t: t for t in tasks}))

    def fabric():
        from lightning.fabric.loggers import TensorBoardLogger

        instance = L.Fabric(accelerator="cpu", devices=1, loggers=[TensorBoardLogger(str(workdir / "upstream-logs"))])
        instance.launch()
        return instance

    def save(model, name):
        save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()},
                  str(out / f"{name}.safetensors"))

    adaptation = dict(weights=None, optimizer="adam", lr=1e-3, init_values=0.3, clamp_weights=False, tie_weights=True,
                      strict=False, devices=1, batch_size=16, num_workers=0, max_steps=steps, fast_dev_run=False,
                      save_merging_weights=False, cache_dir=str(workdir / "upstream-cache"))

    for name in methods:
        torch.manual_seed(0)
        if name == "regmean":
            from fusion_bench.method import RegMeanAlgorithmForCLIP
            algorithm = RegMeanAlgorithmForCLIP(exclude_param_names_regex=[], num_regmean_examples=%(train)d,
                                                reduce_non_diagonal_ratio=0.95, weight_transpose=True,
                                                dataloader_kwargs=DictConfig({"batch_size": %(train)d,
                                                                              "num_workers": 0}))
        elif name == "fisher_merging":
            from fusion_bench.method import FisherMergingForCLIPVisionModel
            algorithm = FisherMergingForCLIPVisionModel(exclude_param_names_regex=[], normalize_fisher_weight=True,
                                                        minimal_fisher_weight=1e-6, num_fisher_examples=%(train)d,
                                                        dataloader_kwargs=DictConfig({"batch_size": %(train)d,
                                                                                      "num_workers": 0}))
        elif name == "task_wise_adamerging":
            from fusion_bench.method.adamerging.clip_task_wise_adamerging import CLIPTaskWiseAdaMergingAlgorithm
            algorithm = CLIPTaskWiseAdaMergingAlgorithm(DictConfig(adaptation))
        elif name == "layer_wise_adamerging":
            from fusion_bench.method.adamerging.clip_layer_wise_adamerging import CLIPLayerWiseAdaMergingAlgorithm
            algorithm = CLIPLayerWiseAdaMergingAlgorithm(DictConfig(adaptation))
        elif name == "wemoe":
            import functools

            import fusion_bench.method.task_arithmetic.task_arithmetic as upstream_ta
            from fusion_bench.method.we_moe.clip_we_moe import CLIPWeightEnsemblingMoEAlgorithm

            # 0.2.33's task_arithmetic_merge adds Parameters to Tensors under a strict check that requires one
            # type and raises TypeError; the keys are equal, so the non-strict sum is the same arithmetic.
            upstream_ta.state_dict_add = functools.partial(upstream_ta.state_dict_add, strict=False)
            routers = load_file(str(workdir / "ours" / "wemoe_routers.safetensors"))

            class Seeded(CLIPWeightEnsemblingMoEAlgorithm):
                """Upstream's WEMoE whose gates start from our routers' initial weights."""

                def construct_moe_model(self):
                    model = super().construct_moe_model()
                    copied = 0
                    for key, value in routers.items():  # ours: <mlp>.router.net.{0,2}.{weight,bias}
                        mlp, _, rest = key.partition(".router.net.")
                        index, _, kind = rest.partition(".")
                        gate = model.get_submodule("vision_model." + mlp).gate  # transformers 4 nests the tower
                        target = getattr(gate, {"0": "fc1", "2": "fc2"}[index])
                        getattr(target, kind).data.copy_(value.to(getattr(target, kind).dtype))
                        copied += 1
                    assert copied == len(routers) and copied > 0, copied
                    return model

            algorithm = Seeded(DictConfig(dict(name="clip_weight_ensembling_moe", checkpoint=False,
                                               save_checkpoint=False, router_hidden_layers=2, init_lambda=0.3,
                                               batch_reduce=True, lr=1e-4, optimizer="adam", devices=1, batch_size=16,
                                               num_workers=0, max_steps=steps, use_grad_accumulate=True,
                                               cache_dir=str(workdir / "upstream-cache"), fast_dev_run=False)))
        else:
            raise SystemExit(f"no upstream counterpart wired for {name}")
        algorithm.fabric = fabric()
        if hasattr(algorithm, "_fabric"):  # task-wise AdaMerging makes its own fabric only when CUDA is present
            algorithm._fabric = algorithm.fabric
        save(algorithm.run(pool()), name)
        print(f"upstream: {name} done", file=sys.stderr)
''') % {"train": TRAIN}


def run_upstream(python: Path, workdir: Path, methods: list[str], steps: int) -> int:
    """Run upstream's implementations in its venv (a fresh working directory: its head cache lives there)."""
    from fusionbench_vision.suites import SUITES
    from fusionbench_vision.tasks import get_task

    spec = SUITES[SUITE]
    suite = {"pretrained": spec.pretrained_id, "experts": {task: spec.expert_id(task) for task in TASKS},
             "datasets": {task: "/".join(filter(None, (get_task(task).dataset, get_task(task).config)))
                          for task in TASKS}}
    cwd = workdir / "upstream-cwd"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    script = workdir / "upstream_child.py"
    script.write_text(UPSTREAM)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    # upstream prints its profiler reports to stdout: they go to stderr, stdout keeps the table alone
    return subprocess.run([str(python), str(script), str(workdir), ",".join(methods), str(steps), ",".join(TASKS),
                           json.dumps(suite)], cwd=cwd, env=env, stdout=sys.stderr).returncode


# -- the comparison ---------------------------------------------------------------------------------------


WEMOE_NAMES = {".gate.fc1.": ".router.net.0.", ".gate.fc2.": ".router.net.2.", ".mlp.base_model.": ".mlp.base."}
"""Upstream's WEMoE module names → ours (its task vectors are stored otherwise and are not compared)."""


def upstream_names(state: dict) -> dict:
    """Upstream's tensors under our names: transformers 4's ``vision_model.`` prefix dropped, WEMoE's
    modules renamed by :data:`WEMOE_NAMES`."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("vision_model.")
        for theirs, ours in WEMOE_NAMES.items():
            key = key.replace(theirs, ours)
        renamed[key] = value
    return renamed


def compare(workdir: Path, methods: list[str], rtol: float) -> bool:
    """Print, per method, the largest |ours − upstream| over the tensors both hold, and its size relative to a
    scale: how far training moved our merge from its start (AdaMerging, WEMoE), else how far our merge lies
    from the simple average. Agreement: the relative size is at most ``rtol``.
    """
    from safetensors.torch import load_file

    ours_dir = workdir / "ours"
    simple = load_file(str(ours_dir / "simple_average.safetensors"))
    ok = True
    print(f"{'method':22s} {'tensors':>7s} {'max|ours-up|':>12s} {'scale':>9s} {'relative':>9s}  "
          f"{'scale: ours vs':14s} worst tensor")
    for name in methods:
        ours = load_file(str(ours_dir / f"{name}.safetensors"))
        theirs = upstream_names(load_file(str(workdir / "upstream" / f"{name}.safetensors")))
        start_file = ours_dir / f"{name}_start.safetensors"
        reference, against = (load_file(str(start_file)), "its start") if start_file.exists() else (simple, "average")
        shared = sorted(key for key in set(ours) & set(theirs) if ours[key].shape == theirs[key].shape)
        scale_keys = [key for key in shared if key in reference]
        if not shared or not scale_keys:
            print(f"{name:22s} no tensors in common (ours {len(ours)}, upstream {len(theirs)})")
            ok = False
            continue
        gaps = {key: float((ours[key] - theirs[key]).abs().max()) for key in shared}
        worst = max(gaps, key=gaps.get)
        scale = max(float((ours[key] - reference[key]).abs().max()) for key in scale_keys)
        relative = gaps[worst] / scale if scale > 0 else float("inf")
        print(f"{name:22s} {len(shared):7d} {gaps[worst]:12.3e} {scale:9.3e} {relative:9.2e}  {against:14s} {worst}")
        ok = ok and relative <= rtol
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description="Upstream FusionBench as an oracle (see the module docstring).")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--steps", type=int, default=10, help="adaptation steps of AdaMerging and WEMoE")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fb-upstream-oracle"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/fb-oracle"))
    parser.add_argument("--rtol", type=float, default=1e-3,
                        help="largest difference, relative to the merge's distance from the average, that agrees")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Error: unknown method '{unknown[0]}' (known: {', '.join(METHODS)})")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["FUSIONBENCH_PROGRESS"] = "0"
    python = ensure_venv(args.venv)
    workdir = args.workdir.resolve()
    models, data = build_fixture(workdir)
    os.environ.update({"FUSIONBENCH_MODEL_ROOT": str(models), "FUSIONBENCH_DATA_ROOT": str(data),
                       "FUSIONBENCH_CACHE": str(workdir / "cache")})
    for side in ("ours", "upstream"):
        shutil.rmtree(workdir / side, ignore_errors=True)
    run_ours(methods, args.steps, workdir / "ours")
    if run_upstream(python, workdir, methods, args.steps) != 0:
        print("Error: upstream FusionBench failed (its output is above)", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(0 if compare(workdir, methods, args.rtol) else 1)


if __name__ == "__main__":
    main()
