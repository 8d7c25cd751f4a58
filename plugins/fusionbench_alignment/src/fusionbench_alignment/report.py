"""The ``fb connect`` program: endpoints, paths, the pairwise matrix, and the JSON and PNG it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fusionbench_core.errors import ConfigError

from .common import model_state
from .connect import curve_path, fit_bezier, linear_path
from .spec import spec_for


def load_endpoint(pool: Any, ref: str):
    """``(model, state)`` of a pool model name or a checkpoint path of the pool's architecture."""
    if ref in pool.model_names:
        model = pool.load_model(ref)
        return model, model_state(model)
    path = Path(ref)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"'{ref}' is neither a model of pool '{pool.name}' ({', '.join(pool.model_names)}) "
                          f"nor a checkpoint (a .safetensors file or a directory with model.safetensors)")
    from fusionbench_core.run import load_checkpoint

    model = load_checkpoint(pool, path)  # a truncated or misfit file: one line naming it
    return model, model_state(model)


def _align(aligner: Any, pool: Any, model_a, model_b) -> dict:
    spec = spec_for(pool, model_a)
    return aligner.align(spec, pool, "A", model_a, "B", model_b)


def connect_pair(pool: Any, ref_a: str, ref_b: str, task: str, *, points: int = 25, examples: int | None = None,
                 aligner: Any = None, curve: bool = False, curve_steps: int = 300, curve_lr: float = 1e-3,
                 seed: int = 0) -> dict[str, Any]:
    """Linear path (and aligned path, and Bézier curve) between two models, with their barriers."""
    model_a, state_a = load_endpoint(pool, ref_a)
    model_b, state_b = load_endpoint(pool, ref_b)
    paths = {"linear": linear_path(pool, state_a, state_b, task, points=points, examples=examples)}
    if aligner is not None:
        aligned = _align(aligner, pool, model_a, model_b)
        paths[f"aligned ({aligner.name})"] = linear_path(pool, state_a, aligned, task, points=points, examples=examples)
    if curve:
        control = fit_bezier(pool, state_a, state_b, task, steps=curve_steps, lr=curve_lr, seed=seed)
        paths["bezier"] = curve_path(pool, state_a, state_b, control, task, points=points, examples=examples)
    return {"task": task, "models": [ref_a, ref_b], "points": points, "paths": paths,
            "align": getattr(aligner, "name", None), "curve": {"steps": curve_steps, "lr": curve_lr} if curve else None}


def pairwise_matrix(pool: Any, task: str, *, points: int = 25, examples: int | None = None,
                    aligner: Any = None) -> dict[str, Any]:
    """Loss and error barriers of every pair of the pool's models (symmetric, zero diagonal)."""
    names = list(pool.model_names)
    loaded = {n: load_endpoint(pool, n) for n in names}
    kinds = ["linear"] + (["aligned"] if aligner is not None else [])
    matrix = {f"{metric}{'' if kind == 'linear' else '_aligned'}": [[0.0] * len(names) for _ in names]
              for kind in kinds for metric in ("loss_barrier", "error_barrier")}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            ends = {"linear": loaded[b][1]}
            if aligner is not None:
                ends["aligned"] = _align(aligner, pool, loaded[a][0], loaded[b][0])
            for kind, end in ends.items():
                path = linear_path(pool, loaded[a][1], end, task, points=points, examples=examples)
                for metric in ("loss_barrier", "error_barrier"):
                    key = f"{metric}{'' if kind == 'linear' else '_aligned'}"
                    matrix[key][i][j] = matrix[key][j][i] = path[metric]
    return {"task": task, "models": names, "points": points, "matrix": matrix, "align": getattr(aligner, "name", None)}


def _replace_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plot(result: dict[str, Any], path: Path) -> None:
    """The PNG: loss and test error along each path, or the barrier matrices as heat maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "matrix" in result:
        keys = [k for k in result["matrix"] if k.startswith("loss_barrier")]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
        for ax, key in zip(axes[0], keys):
            values = result["matrix"][key]
            image = ax.imshow(values, cmap="viridis")
            names = result["models"]
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), names)
            ax.set_title(f"{key.replace('_', ' ')} on {result['task']}")
            top = max((v for row in values for v in row), default=0.0)
            for i, row in enumerate(values):  # each cell's value, readable on the colour under it
                for j, value in enumerate(row):
                    ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                            color="black" if top and value > 0.6 * top else "white")
            fig.colorbar(image, ax=ax)
    else:
        fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(9.5, 3.6))
        for label, p in result["paths"].items():
            text = f"{label} (B={p['loss_barrier']:.3f})"
            ax_loss.plot(p["alpha"], p["loss"], marker=".", label=text)
            ax_err.plot(p["alpha"], [100 * e for e in p["error"]], marker=".", label=label)
        a, b = result["models"]
        for ax, ylabel in ((ax_loss, "test loss"), (ax_err, "test error (%)")):
            ax.set_xlabel(f"α (t on the curve)  (0: {Path(a).name}, 1: {Path(b).name})")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)
        fig.suptitle(f"task {result['task']}", fontsize=10)
    fig.tight_layout()
    _replace_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)


def write_outputs(result: dict[str, Any], directory: Path) -> list[str]:
    """Write ``connect.json`` and ``connect.png`` into ``directory`` (each to a temporary name, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "connect.json", directory / "connect.png"
    files = [str(json_path), str(png_path)]
    text = json.dumps({**result, "files": files}, indent=2, sort_keys=True) + "\n"
    _replace_atomic(json_path, lambda tmp: tmp.write_text(text))
    plot(result, png_path)
    return files
