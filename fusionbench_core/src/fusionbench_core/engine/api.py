"""``fb merge``: merge checkpoints on disk into a new HF-format directory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import ComponentSpec
from ..errors import ConfigError
from ..plugins import get_host
from ..protocols import PRETRAINED
from ..run import instantiate
from .sources import open_source
from .tensorwise import TensorwiseAlgorithm, merge_sources

COPIED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                "preprocessor_config.json")


def merge_command(*, method: str, pretrained: Path | None, models: list[Path], modelpool: str | None,
                  hyperparameters: dict[str, Any], output: Path, device: str, dtype: str | None,
                  seed: int) -> dict[str, Any]:
    """Merge and write; return a JSON-ready summary."""
    host = get_host()
    algorithm = instantiate(host, "method", ComponentSpec(method, hyperparameters))
    if not isinstance(algorithm, TensorwiseAlgorithm):
        raise ConfigError(f"method '{method}' is not a tensor-by-tensor merge; use `fb run` for it")
    algorithm.seed = seed
    if modelpool:
        pool = instantiate(host, "modelpool", ComponentSpec(modelpool))
        base = pool.tensors(PRETRAINED) if pool.has_pretrained else None
        names = list(pool.model_names)
        sources = [pool.tensors(n) for n in names]
        base_dir = None
    else:
        if not models:
            raise ConfigError("fb merge: give --model at least once, or --modelpool")
        base = open_source(pretrained) if pretrained else None
        names = [str(m) for m in models]
        sources = [open_source(m) for m in models]
        base_dir = pretrained if pretrained and pretrained.is_dir() else None
    if algorithm.needs_pretrained and base is None:
        raise ConfigError(f"method '{method}' needs --pretrained")
    out_dtype = getattr(torch, dtype) if dtype else None
    state: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    merge_sources(algorithm, base, sources, sink=state.__setitem__, model_names=names, out_dtype=out_dtype,
                  device=device)
    output = Path(output)
    tmp = output.with_name(f".{output.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt", "fusionbench_method": method})
    if base_dir is not None:
        for name in COPIED_FILES:
            if (base_dir / name).exists():
                shutil.copy2(base_dir / name, tmp / name)
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return {"method": method, "hyperparameters": algorithm.settings, "models": names,
            "output": str(output), "tensors": len(state), "wall_s": round(time.perf_counter() - start, 3)}
