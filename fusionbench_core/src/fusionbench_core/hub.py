"""Where models and datasets come from: hub ids, mapped to local directories when asked.

One mechanism for every suite. ``FUSIONBENCH_MODEL_ROOT`` (or ``--model-root`` options that set it)
names a directory in which a hub id ``owner/name`` is looked up as ``<root>/owner/name``; likewise
``FUSIONBENCH_DATA_ROOT`` for dataset ids. Found locally, the path is used; otherwise the hub id is
passed on to ``from_pretrained`` / ``load_dataset`` unchanged, which works wherever a hub is reachable
(or its cache is warm). With ``HF_HUB_OFFLINE=1`` and no local copy the error says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelLoadError

MODEL_ROOT_ENV = "FUSIONBENCH_MODEL_ROOT"
DATA_ROOT_ENV = "FUSIONBENCH_DATA_ROOT"
CACHE_ENV = "FUSIONBENCH_CACHE"


def _roots(env: str) -> list[Path]:
    value = os.environ.get(env, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def _resolve(identifier: str, env: str, what: str) -> str:
    candidate = Path(identifier).expanduser()
    if candidate.exists():
        return str(candidate)
    for root in _roots(env):
        local = root / identifier
        if local.exists():
            return str(local)
    offline = (env == MODEL_ROOT_ENV and os.environ.get("HF_HUB_OFFLINE") == "1") or (
        env == DATA_ROOT_ENV and os.environ.get("HF_DATASETS_OFFLINE") == "1"
    )
    if offline:
        roots = ", ".join(map(str, _roots(env))) or "unset"
        raise ModelLoadError(
            f"{what} '{identifier}' is not available offline: put a copy at <root>/{identifier} "
            f"and set {env} (now: {roots}), or allow hub access"
        )
    return identifier


def resolve_model(identifier: str) -> str:
    """A local directory for ``identifier`` if one exists under a model root, else the hub id itself."""
    return _resolve(identifier, MODEL_ROOT_ENV, "model")


def resolve_dataset(identifier: str) -> str:
    """A local directory for dataset ``identifier`` if one exists under a data root, else the hub id itself."""
    return _resolve(identifier, DATA_ROOT_ENV, "dataset")


def cache_dir(*parts: str) -> Path:
    """``$FUSIONBENCH_CACHE`` (default ``~/.cache/fusionbench``) joined with ``parts``, created."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fusionbench").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
