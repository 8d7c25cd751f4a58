"""``fb merge``: merge checkpoints on disk into a new HF-format directory.

The output directory is built under a temporary name next to it and renamed when complete: sharded
safetensors written tensor by tensor, the base model's config and tokenizer files, and a model card
(``README.md``) naming the method, its hyperparameters and every input with its content hash.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import ComponentSpec
from ..errors import ConfigError
from ..plugins import get_host
from ..protocols import PRETRAINED
from ..run import instantiate

COPIED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
                "spiece.model", "tokenizer.model", "preprocessor_config.json", "chat_template.jinja")
"""Files copied from the base model's directory into the output."""


def content_hasher() -> Any:
    """The hash used for inputs: xxh3-128 when ``xxhash`` is installed (≈10 GB/s), else SHA-256."""
    try:
        import xxhash

        return xxhash.xxh3_128()
    except ImportError:  # pragma: no cover - depends on the environment
        return hashlib.sha256()


def hash_name(hasher: Any) -> str:
    """``"xxh3-128"`` or ``"sha256"``."""
    return "sha256" if getattr(hasher, "name", "") == "sha256" else "xxh3-128"


def _merge_progress(total_bytes: int, n_tensors: int):
    """A rich bar on stderr counting bytes read and tensors merged; yields ``advance(key, n_bytes)``."""
    import sys
    from contextlib import contextmanager

    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    @contextmanager
    def bar():
        enabled = os.environ.get("FUSIONBENCH_PROGRESS", "1") != "0" and sys.stderr.isatty()
        columns = (TextColumn("[bold]merging"), BarColumn(),
                   TextColumn("{task.fields[done]}/{task.fields[tensors]} tensors"), DownloadColumn(),
                   TransferSpeedColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(file=sys.stderr, stderr=True), transient=True,
                      disable=not enabled) as progress:
            task = progress.add_task("merge", total=total_bytes, done=0, tensors=n_tensors)
            seen: set[str] = set()

            def advance(key: str, n_bytes: int) -> None:
                seen.add(key)
                progress.update(task, advance=n_bytes, done=len(seen))

            yield advance

    return bar()


def model_card(method: str, settings: dict[str, Any], inputs: list[dict[str, Any]], *, seed: int,
               dtype: str | None, device: str, tensors: int, total_bytes: int) -> str:
    """The output's README.md: what was merged, how, and from which exact inputs."""
    lines = ["---", "tags:", "- fusionbench", "- merge", f"- {method}", "---", "",
             f"# Merged with FusionBench `{method}`", "",
             f"Created {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
             f"`fb merge {method}` ({tensors} tensors, {total_bytes / 1e9:.3f} GB).", "",
             "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in settings.items()] or ["| (none) | |"]
    lines += [f"| seed | `{seed}` |", f"| output dtype | `{dtype or 'as the base model'}` |",
              f"| device | `{device}` |", "", "## Inputs", "",
              "Content hash: over each input's tensors in merge order, every tensor's name then its raw "
              "bytes as read (for a LoRA input, base + ΔW in float32), so it ignores file layout and sharding.",
              "", "| role | path | hash |", "|---|---|---|"]
    lines += [f"| {i['role']} | `{i['path']}` | `{i['hash_algorithm']}:{i['hash']}` |" for i in inputs]
    return "\n".join(lines) + "\n"


def keep_freed_memory() -> None:
    """Ask glibc to serve large blocks from the heap and keep freed ones (no ``mmap``/``munmap`` per tensor).

    A merge allocates and frees same-sized tensors thousands of times; without this every one is a
    fresh ``mmap`` whose pages the kernel must fault in and zero, which halves the read bandwidth.
    Peak memory is unchanged (freed blocks are reused). No-op outside glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _read_pool_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"model pool file '{path}': {exc}") from exc
    if not isinstance(spec, dict) or not ("name" in spec or "models" in spec):
        raise ConfigError(f"model pool file '{path}': expected a mapping with 'name' or 'models'")
    return spec


def merge_command(*, method: str, pretrained: Path | None, models: list[Path], modelpool: str | None,
                  hyperparameters: dict[str, Any], output: Path, device: str, dtype: str | None,
                  seed: int, shard_size: str | int = "5GB", progress: bool = True,
                  modelpool_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge and write; return a JSON-ready summary.

    ``modelpool`` is a registered pool name (with ``modelpool_options``) or a YAML file holding either
    ``{name: POOL, ...options}`` or ``{pretrained: PATH, models: [PATH, ...] | {NAME: PATH}}``.
    """
    import torch

    from .sources import is_lora_adapter, open_source
    from .tensorwise import TensorwiseAlgorithm, effective_device, merge_sources
    from .writer import SafetensorsWriter, parse_size

    keep_freed_memory()
    host = get_host()
    algorithm = instantiate(host, "method", ComponentSpec(method, hyperparameters))
    if not isinstance(algorithm, TensorwiseAlgorithm):
        raise ConfigError(f"method '{method}' is not a tensor-by-tensor merge; use `fb run` for it")
    algorithm.seed = seed
    max_shard = parse_size(shard_size)
    if modelpool and modelpool.endswith((".yaml", ".yml")):
        if models or pretrained:
            raise ConfigError("fb merge: give either --modelpool or --pretrained/--model, not both")
        spec = _read_pool_file(Path(modelpool))
        if "name" in spec:
            modelpool, modelpool_options = str(spec.pop("name")), {**spec, **(modelpool_options or {})}
        else:
            root = Path(modelpool).parent
            pretrained = root / spec["pretrained"] if spec.get("pretrained") else None
            listed = spec.get("models") or []
            models = [root / p for p in (listed.values() if isinstance(listed, dict) else listed)]
            modelpool = None
    if modelpool:
        if models or pretrained:
            raise ConfigError("fb merge: give either --modelpool or --pretrained/--model, not both")
        pool = instantiate(host, "modelpool", ComponentSpec(modelpool, dict(modelpool_options or {})))
        base = pool.tensors(PRETRAINED) if pool.has_pretrained else None
        names = list(pool.model_names)
        sources = [pool.tensors(n) for n in names]
        # Config and tokenizer files come from the pool's pretrained directory when it has one on disk.
        model_dir = getattr(pool, "model_dir", None)
        base_dir = model_dir(PRETRAINED) if callable(model_dir) and pool.has_pretrained else None
        labels = [f"{modelpool}:{n}" for n in names]
        base_label = f"{modelpool}:{PRETRAINED}"
    else:
        if not models:
            raise ConfigError("fb merge: give --model at least once, or --modelpool")
        base = open_source(pretrained) if pretrained else None
        for model in models:
            if is_lora_adapter(model) and base is None:
                raise ConfigError(f"LoRA adapter '{model}' needs its base model as --pretrained")
        sources = [open_source(m, base=base) for m in models]
        names = labels = [str(m) for m in models]
        base_label = str(pretrained) if pretrained else None
        base_dir = pretrained if pretrained and Path(pretrained).is_dir() else (
            models[0] if Path(models[0]).is_dir() and not is_lora_adapter(models[0]) else None)
    if algorithm.needs_pretrained and base is None:
        raise ConfigError(f"method '{method}' needs --pretrained")
    out_dtype = getattr(torch, dtype) if dtype else None
    first = base if base is not None else sources[0]
    plan = []
    for key in first.keys():
        info = first.info(key)
        native = getattr(torch, info.dtype)
        plan.append((key, info.shape, out_dtype if out_dtype is not None and native.is_floating_point else native))
    inputs = ([base] if base is not None else []) + sources
    total_in = sum(torch.Size(first.info(k).shape).numel() * getattr(torch, first.info(k).dtype).itemsize
                   for k in first.keys()) * len(inputs)
    hashers = [content_hasher() for _ in inputs]

    output = Path(output)
    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    start = time.perf_counter()
    try:
        writer = SafetensorsWriter(tmp, plan, max_shard_bytes=max_shard,
                                   metadata={"fusionbench_method": method})
        try:
            if progress:
                with _merge_progress(total_in, len(plan)) as advance:
                    keys = merge_sources(algorithm, base, sources, sink=writer, model_names=names,
                                         out_dtype=out_dtype, device=device, progress=advance, hashers=hashers)
            else:
                keys = merge_sources(algorithm, base, sources, sink=writer, model_names=names,
                                     out_dtype=out_dtype, device=device, hashers=hashers)
        finally:
            writer.close()
        if base_dir is not None:
            for name in COPIED_FILES:
                if (Path(base_dir) / name).exists():
                    shutil.copy2(Path(base_dir) / name, tmp / name)
        roles = (["pretrained"] if base is not None else []) + ["model"] * len(sources)
        paths = ([base_label] if base is not None else []) + labels
        described = [{"role": r, "path": p, "hash_algorithm": hash_name(h), "hash": h.hexdigest()}
                     for r, p, h in zip(roles, paths, hashers, strict=True)]
        (tmp / "README.md").write_text(model_card(method, algorithm.settings, described, seed=seed, dtype=dtype,
                                                  device=device, tensors=len(keys), total_bytes=writer.total_bytes))
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"method": method, "hyperparameters": algorithm.settings, "models": names,
            "pretrained": base_label, "inputs": described, "device": effective_device(algorithm, device), "output": str(output), "tensors": len(keys),
            "shards": len(writer.files), "bytes_written": writer.total_bytes, "cost": algorithm.cost,
            "wall_s": round(time.perf_counter() - start, 3)}
