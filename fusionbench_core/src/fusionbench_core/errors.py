"""Errors that FusionBench shows to users as one line.

Library code raises these; the ``fb`` CLI prints ``Error: <message>`` and exits with status 1.
Anything else is a bug and prints a traceback only under ``-v``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FusionBenchError(Exception):
    """Base class of every error whose message is meant for the user."""


class ConfigError(FusionBenchError):
    """A run file, option or ``key=value`` setting is wrong."""


class UnknownComponentError(ConfigError, KeyError):
    """A method, model pool, task pool or hyperparameter name is not known."""

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str = "", owner: str = "",
                 label: str = ""):
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        kind = label or kind  # how the message names the kind, e.g. "model pool" for kind "modelpool"
        message = f"unknown {kind} '{name}'" + (f" of {owner}" if owner else "") + "."
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        if close:
            message += " Did you mean: " + ", ".join(close) + "?"
        elif self.available:
            shown = ", ".join(self.available[:12])
            more = "" if len(self.available) <= 12 else f", … ({len(self.available)} in all)"
            message += f" Available: {shown}{more}."
        else:
            message += f" No {kind} is installed."
        if hint:
            message += " " + hint
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(FusionBenchError):
    """Two plugins registered the same name for the same kind of component.

    ``plugins`` holds the two plugins' entry-point names (first owner first), so listings can show
    the conflict with each of them.
    """

    def __init__(self, message: str, plugins: tuple[str, ...] = ()):
        super().__init__(message)
        self.plugins = tuple(plugins)


class PluginLoadError(FusionBenchError):
    """A plugin's entry point could not be imported."""


class ModelLoadError(FusionBenchError):
    """A checkpoint could not be found or read."""


class ShapeMismatchError(FusionBenchError):
    """Models in one pool disagree on a tensor's keys, shape or dtype."""
