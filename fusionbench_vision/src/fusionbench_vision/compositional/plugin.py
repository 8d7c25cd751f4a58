"""Entry point ``mini_compositional``: registers the mini-compositional suite and ``fb compositional``, without torch.

The model pool and the task pool share the name ``mini-compositional``; their targets are lazy
strings, so listing them loads nothing heavy.
"""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

NAME = "mini-compositional"
SUMMARY = ("Offline CPU suite (Tam et al. 2024): emoji (category, artist) pairs, 8 held-in experts, 8 held-out "
           "pairs, mini-vision's encoder")


def _tasks() -> dict:
    from . import data

    return {"tasks": data.held_in() + data.held_out(), "held_in": data.held_in(), "held_out": data.held_out()}


@hookimpl
def register_modelpools(register):
    """Register the mini-compositional model pool (builds itself on first use)."""
    register(NAME, "fusionbench_vision.compositional.pool:CompositionalModelPool", summary=SUMMARY,
             pretraining="fashion_mnist (mini-vision's encoder)", **_tasks())


@hookimpl
def register_taskpools(register):
    """Register the mini-compositional task pool (every pair, with held-in and held-out groups)."""
    register(NAME, "fusionbench_vision.compositional.pool:CompositionalTaskPool", summary=SUMMARY, **_tasks())


@hookimpl
def register_commands(cli):
    """Add ``fb compositional`` (run the protocol's sweeps; the report) to the root group."""
    from .report import compositional

    cli.add_command(compositional)
