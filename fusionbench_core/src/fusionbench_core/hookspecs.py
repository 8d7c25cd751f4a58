"""Hook specifications for FusionBench plugins.

A plugin is a module listed under the ``fusionbench`` entry-point group whose functions are
decorated with :data:`hookimpl`. Every hook here is documented in ``docs/plugins.md``.

This module is the plugin API and imports nothing of FusionBench at run time (only pluggy), so
the run program, the plugin host and plugins may all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from .config import RunConfig

PROJECT_NAME = "fusionbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@dataclass
class RunInfo:
    """What the ``run_started`` / ``run_finished`` hooks receive: the resolved components of one run."""

    config: RunConfig
    algorithm: Any
    modelpool: Any
    taskpool: Any
    output: Path | None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Register(Protocol):
    """The callback a ``register_*`` hook receives."""

    def __call__(
        self,
        name: str,
        target: type | str,
        *,
        summary: str = "",
        aliases: tuple[str, ...] = (),
        **metadata: Any,
    ) -> None:
        """Register ``target`` (a class, or a lazy ``"package.module:Class"`` string) as ``name``.

        ``summary`` and ``metadata`` (for example ``requirement="data-free"`` for a method, or
        ``tasks=[...]`` for a suite) are shown by the listings without importing ``target``.
        """


@hookspec
def register_methods(register: Register) -> None:
    """Register fusion algorithms, e.g. ``register("ties", "pkg.ties:TiesMerging")``."""


@hookspec
def register_modelpools(register: Register) -> None:
    """Register model pools (a suite's models), e.g. ``register("mini-vision", "pkg.pool:Pool")``."""


@hookspec
def register_taskpools(register: Register) -> None:
    """Register task pools (a suite's evaluation), usually under the same name as the model pool."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to ``fb``, e.g. ``fb suites build``."""


@hookspec
def run_started(run: RunInfo) -> None:
    """Called once the components of a run are resolved, before the method runs."""


@hookspec
def run_finished(run: RunInfo, report: dict[str, Any]) -> None:
    """Called with the finished report (the JSON object) after evaluation."""
