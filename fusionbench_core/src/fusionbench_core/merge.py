"""The ``fb merge`` program: merge checkpoints on disk into a new HF-format directory.

Inputs come from paths (``--pretrained``/``--model``), a registered model pool, or a YAML pool file
(:class:`MergeInputs`). The output is built in a temporary directory next to the target: sharded
safetensors written tensor by tensor, the base model's config and tokenizer files, and a model card
(``README.md``) naming the method, its hyperparameters and every input with its content hash. Only
a complete output is moved into place (:func:`fusionbench_core.run.install_dir`), so a kill, Ctrl-C
or a full disk never leaves a partial model at the output path. An output directory that exists and
is not empty is refused unless ``overwrite``; then only fb's own files in it are replaced.

This is application code (it resolves plugins and options); the tensor engine it drives
(:mod:`fusionbench_core.engine`) knows nothing of plugins, runs or configuration.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ComponentSpec
from .errors import ConfigError
from .plugins import PluginHost, get_host
from .protocols import PRETRAINED, TensorSource
from .run import check_output_dir, install_dir, instantiate, temporary_dir_for

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


@contextmanager
def merge_progress(total_bytes: int, n_tensors: int) -> Iterator[Callable[[str, int], None]]:
    """A rich bar on stderr counting bytes read and tensors merged; yields ``advance(key, n_bytes)``.

    It draws only when stderr is a terminal and ``FUSIONBENCH_PROGRESS`` is not ``0``.
    """
    import sys

    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

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


def read_pool_file(path: Path) -> dict[str, Any]:
    """Read a YAML pool file: ``{name: POOL, ...options}`` or ``{pretrained: PATH, models: [...] | {NAME: PATH}}``."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"model pool file '{path}': {exc}") from exc
    if not isinstance(spec, dict) or not ("name" in spec or "models" in spec):
        raise ConfigError(f"model pool file '{path}': expected a mapping with 'name' or 'models'")
    models = spec.get("models")
    if "name" not in spec and not isinstance(models, (list, dict)):
        raise ConfigError(f"model pool file '{path}': 'models' must be a list of paths or a mapping of names to paths")
    if "pretrained" in spec and spec["pretrained"] is not None and not isinstance(spec["pretrained"], str):
        raise ConfigError(f"model pool file '{path}': 'pretrained' must be a path")
    return spec


@dataclass
class MergeInputs:
    """What a merge reads: the base model (or None), the fine-tuned models and where config files live."""

    base: TensorSource | None
    sources: list[TensorSource]
    names: list[str]
    """Model names handed to the method (pool names, or the paths)."""
    labels: list[str]
    """How the model card names each fine-tuned input."""
    base_label: str | None
    base_dir: Path | None
    """A directory whose config and tokenizer files the output copies (:data:`COPIED_FILES`)."""

    @classmethod
    def from_paths(cls, pretrained: Path | None, models: list[Path]) -> MergeInputs:
        """Checkpoints given as paths: HF directories, safetensors files, shard indexes or PEFT LoRA adapters."""
        from .engine.sources import is_lora_adapter, open_source

        if not models:
            raise ConfigError("give --model at least once, or --modelpool")
        base = open_source(pretrained) if pretrained else None
        for model in models:
            if is_lora_adapter(model) and base is None:
                raise ConfigError(f"LoRA adapter '{model}' needs its base model as --pretrained")
        sources = [open_source(m, base=base) for m in models]
        names = [str(m) for m in models]
        base_dir = pretrained if pretrained and Path(pretrained).is_dir() else (
            models[0] if Path(models[0]).is_dir() and not is_lora_adapter(models[0]) else None)
        return cls(base, sources, names, list(names), str(pretrained) if pretrained else None,
                   Path(base_dir) if base_dir else None)

    @classmethod
    def from_pool(cls, host: PluginHost, name: str, options: dict[str, Any] | None = None) -> MergeInputs:
        """Every model of a registered model pool; config files from its pretrained directory, if on disk."""
        pool = instantiate(host, "modelpool", ComponentSpec(name, dict(options or {})))
        base = pool.tensors(PRETRAINED) if pool.has_pretrained else None
        names = list(pool.model_names)
        model_dir = getattr(pool, "model_dir", None)
        base_dir = model_dir(PRETRAINED) if callable(model_dir) and pool.has_pretrained else None
        return cls(base, [pool.tensors(n) for n in names], names, [f"{name}:{n}" for n in names],
                   f"{name}:{PRETRAINED}" if base is not None else None, Path(base_dir) if base_dir else None)

    @classmethod
    def from_pool_file(cls, host: PluginHost, path: Path, options: dict[str, Any] | None = None) -> MergeInputs:
        """A YAML pool file naming a registered pool (with options) or listing paths relative to the file."""
        spec = read_pool_file(path)
        if "name" in spec:
            name = str(spec.pop("name"))
            return cls.from_pool(host, name, {**spec, **(options or {})})
        root = Path(path).parent
        pretrained = root / spec["pretrained"] if spec.get("pretrained") else None
        listed = spec["models"]
        return cls.from_paths(pretrained, [root / p for p in (listed.values() if isinstance(listed, dict) else listed)])

    @classmethod
    def resolve(cls, host: PluginHost, *, pretrained: Path | None, models: list[Path], modelpool: str | None,
                modelpool_options: dict[str, Any] | None = None) -> MergeInputs:
        """The inputs of ``fb merge``'s three modes; ``--modelpool`` excludes ``--pretrained``/``--model``."""
        if modelpool and (models or pretrained):
            raise ConfigError("give either --modelpool or --pretrained/--model, not both")
        if modelpool and modelpool.endswith((".yaml", ".yml")):
            return cls.from_pool_file(host, Path(modelpool), modelpool_options)
        if modelpool:
            return cls.from_pool(host, modelpool, modelpool_options)
        return cls.from_paths(pretrained, models)


def merge_to_directory(algorithm: Any, inputs: MergeInputs, output: Path, *, method: str, device: str,
                       dtype: str | None, seed: int, shard_size: str | int = "5GB", overwrite: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Merge ``inputs`` with ``algorithm`` into ``output``; return a JSON-ready summary.

    Everything is written to a temporary directory next to ``output`` first and moved into place only
    when complete; on any error (or Ctrl-C) the temporary directory is removed and ``output`` is as it was.
    """
    import torch

    from .engine.tensorwise import effective_device, merge_sources
    from .engine.writer import SafetensorsWriter, parse_size

    output = Path(output)
    check_output_dir(output, overwrite=overwrite)
    if algorithm.needs_pretrained and inputs.base is None:
        raise ConfigError(f"method '{method}' needs --pretrained")
    max_shard = parse_size(shard_size)
    base, sources = inputs.base, inputs.sources
    out_dtype = getattr(torch, dtype) if dtype else None
    first = base if base is not None else sources[0]
    plan = []
    for key in first.keys():
        info = first.info(key)
        native = getattr(torch, info.dtype)
        plan.append((key, info.shape, out_dtype if out_dtype is not None and native.is_floating_point else native))
    readers = ([base] if base is not None else []) + sources
    total_in = sum(torch.Size(first.info(k).shape).numel() * getattr(torch, first.info(k).dtype).itemsize
                   for k in first.keys()) * len(readers)
    hashers = [content_hasher() for _ in readers]

    start = time.perf_counter()
    tmp = temporary_dir_for(output)
    try:
        writer = SafetensorsWriter(tmp, plan, max_shard_bytes=max_shard, metadata={"fusionbench_method": method})
        try:
            with merge_progress(total_in, len(plan)) if progress else _no_progress() as advance:
                keys = merge_sources(algorithm, base, sources, sink=writer, model_names=inputs.names,
                                     out_dtype=out_dtype, device=device, progress=advance, hashers=hashers)
        finally:
            writer.close()
        if inputs.base_dir is not None:
            for name in COPIED_FILES:
                if (inputs.base_dir / name).exists():
                    shutil.copy2(inputs.base_dir / name, tmp / name)
        roles = (["pretrained"] if base is not None else []) + ["model"] * len(sources)
        paths = ([inputs.base_label] if base is not None else []) + inputs.labels
        described = [{"role": r, "path": p, "hash_algorithm": hash_name(h), "hash": h.hexdigest()}
                     for r, p, h in zip(roles, paths, hashers, strict=True)]
        (tmp / "README.md").write_text(model_card(method, algorithm.settings, described, seed=seed, dtype=dtype,
                                                  device=device, tensors=len(keys), total_bytes=writer.total_bytes))
        install_dir(tmp, output, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"method": method, "hyperparameters": algorithm.settings, "models": inputs.names,
            "pretrained": inputs.base_label, "inputs": described, "device": effective_device(algorithm, device),
            "output": str(output), "tensors": len(keys), "shards": len(writer.files),
            "bytes_written": writer.total_bytes, "cost": algorithm.cost,
            "wall_s": round(time.perf_counter() - start, 3)}


@contextmanager
def _no_progress() -> Iterator[None]:
    yield None


def merge_command(*, method: str, pretrained: Path | None, models: list[Path], modelpool: str | None,
                  hyperparameters: dict[str, Any], output: Path, device: str, dtype: str | None,
                  seed: int, shard_size: str | int = "5GB", progress: bool = True,
                  modelpool_options: dict[str, Any] | None = None, overwrite: bool = False,
                  host: PluginHost | None = None) -> dict[str, Any]:
    """What ``fb merge`` runs: build the method, resolve the inputs, merge and write; return a summary.

    ``modelpool`` is a registered pool name (with ``modelpool_options``) or a YAML file holding either
    ``{name: POOL, ...options}`` or ``{pretrained: PATH, models: [PATH, ...] | {NAME: PATH}}``.
    The output is checked first, so a refused ``output`` costs no reading.
    """
    from .engine.tensorwise import TensorwiseAlgorithm

    keep_freed_memory()
    host = host or get_host()
    check_output_dir(Path(output), overwrite=overwrite)
    algorithm = instantiate(host, "method", ComponentSpec(method, hyperparameters))
    if not isinstance(algorithm, TensorwiseAlgorithm):
        raise ConfigError(f"method '{method}' is not a tensor-by-tensor merge; use `fb run` for it")
    algorithm.seed = seed
    inputs = MergeInputs.resolve(host, pretrained=pretrained, models=list(models), modelpool=modelpool,
                                 modelpool_options=modelpool_options)
    return merge_to_directory(algorithm, inputs, Path(output), method=method, device=device, dtype=dtype, seed=seed,
                              shard_size=shard_size, overwrite=overwrite, progress=progress)
