"""Rich progress on stderr for long loops (over models, tensors, batches, tasks).

Bars draw only when stderr is a terminal, so logs and captured output stay clean;
``FUSIONBENCH_PROGRESS=0`` turns them off everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def _enabled() -> bool:
    return os.environ.get("FUSIONBENCH_PROGRESS", "1") != "0"


def _progress(*columns) -> Progress:
    console = Console(file=sys.stderr, stderr=True)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), *columns, TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True,
                    disable=not (_enabled() and sys.stderr.isatty()))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a counting progress bar on stderr."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _progress(MofNCompleteColumn()) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
