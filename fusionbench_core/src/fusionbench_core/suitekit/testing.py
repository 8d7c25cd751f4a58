"""Pytest fixtures and helpers shared by the expert suites' tests (needs pytest; no torch at import).

A test module takes the fixtures it needs by importing them
(``from fusionbench_core.suitekit.testing import built, cache  # noqa: F401``):

- :func:`cache`: a private ``FUSIONBENCH_CACHE`` for a test module;
- :func:`built`: ``built(name)`` loads a task of the module's ``task_catalog`` fixture at the
  module's ``task_sizes`` once per module, skipping the test when the task's sources are missing;
- :func:`suite_cache`: a private ``FUSIONBENCH_CACHE`` for one test; calling it points the cache
  elsewhere (how a test builds the same suite twice from nothing);

and the helpers :func:`use_builder` (make a suite's pool classes use a test's builder, for the
pools that ``fb`` itself instantiates) and :func:`safetensors_bytes` (the bytes of a built suite).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = ["built", "cache", "safetensors_bytes", "suite_cache", "use_builder"]


def safetensors_bytes(root: Path) -> dict[str, bytes]:
    """Every ``*.safetensors`` file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*.safetensors"))}


def use_builder(monkeypatch: pytest.MonkeyPatch, builder: Any, *pool_classes: type) -> None:
    """Make ``pool_classes`` (a suite's model and task pool) use ``builder`` for the rest of the test.

    A pool made in the test can take ``builder=`` instead; this is for the pools ``fb`` makes by name.
    """
    for cls in pool_classes:
        monkeypatch.setattr(cls, "builder", builder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private FUSIONBENCH_CACHE for the module, so the user's cache is never touched."""
    root = tmp_path_factory.mktemp("fbcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONBENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def built(cache, task_catalog, task_sizes):
    """Loads (and caches) each small task once per module.

    Needs the module's fixtures ``task_catalog`` (a :class:`.catalog.TaskCatalog`) and
    ``task_sizes`` (one ``(train, validation, test)`` for every task, or a mapping by task).
    """
    done = {}

    def get(name: str) -> Any:
        """The small task ``name``; skips the test when its sources are missing."""
        if not task_catalog.sources_available(name):
            pytest.skip(task_catalog.missing_sources(name)[0])
        if name not in done:
            sizes = task_sizes[name] if isinstance(task_sizes, Mapping) else task_sizes
            done[name] = task_catalog.load_task(name, sizes=sizes)
        return done[name]

    return get


@pytest.fixture
def suite_cache(monkeypatch, tmp_path) -> Callable[[Path], None]:
    """``FUSIONBENCH_CACHE`` under ``tmp_path`` for one test; call it with a path to point the cache there."""
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))

    def use_cache(path: Path) -> None:
        monkeypatch.setenv("FUSIONBENCH_CACHE", str(path))

    return use_cache
