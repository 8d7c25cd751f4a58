"""Pytest helpers for FusionBench and for plugin authors (needs ``fusionbench-core[testing]``).

Opt in from a root ``conftest.py`` with ``pytest_plugins = ["fusionbench_core.testing"]`` to get the
fixtures :func:`tiny_modelpool`, :func:`tiny_taskpool` and :func:`fb_cli`. The tiny pools are
described in :mod:`fusionbench_core.tiny`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from .tiny import TinyModelPool, TinySuite, TinyTaskPool, build_tiny_suite

__all__ = ["CliResult", "TinyModelPool", "TinySuite", "TinyTaskPool", "build_tiny_suite", "invoke_fb"]


# -- pytest fixtures ---------------------------------------------------------------------------


class CliResult:
    """A finished ``fb`` invocation: exit code, stdout, stderr and parsed JSON."""

    def __init__(self, result: Result):
        self.result = result
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    @property
    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


def invoke_fb(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run ``fb ARGS`` in process and capture its output."""
    from .cli import cli

    runner = CliRunner()
    return CliResult(runner.invoke(cli, list(args), env=env, catch_exceptions=True))


@pytest.fixture
def fb_cli():
    """Call ``fb_cli("methods", "--json")`` to run the CLI in process; returns a :class:`CliResult`."""
    return invoke_fb


@pytest.fixture
def tiny_modelpool():
    """Call ``tiny_modelpool(n_models=3, seed=0)`` to get a :class:`TinyModelPool`."""

    def make(n_models: int = 3, seed: int = 0) -> TinyModelPool:
        return TinyModelPool("tiny", n_models=n_models, seed=seed)

    return make


@pytest.fixture
def tiny_taskpool():
    """Call ``tiny_taskpool(n_models=3, seed=0)`` to get the matching :class:`TinyTaskPool`."""

    def make(n_models: int = 3, seed: int = 0) -> TinyTaskPool:
        return TinyTaskPool("tiny", n_models=n_models, seed=seed)

    return make
