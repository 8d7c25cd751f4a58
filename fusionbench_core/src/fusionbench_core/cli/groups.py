"""The click groups of ``fb``: one-line errors at the root, nouns that default to ``list``."""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import FusionBenchError
from ..plugins import get_host
from .render import stderr_console

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class DefaultGroup(click.Group):
    """A noun: bare, or followed by an option (``fb methods --json``), it runs ``list``.

    An unknown first word goes to ``show`` when the group has one, so ``fb methods tie`` answers
    "unknown method 'tie'. Did you mean: ties?" and ``fb methods ties`` shows TIES.
    """

    default_command = "list"
    unknown_command = "show"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert ``list`` or ``show`` in front of ``args`` as the class docstring says."""
        first = args[0] if args else None
        if first is None or (first.startswith("-") and first not in ("-h", "--help")):
            args = [self.default_command, *args]
        elif first not in self.commands and not first.startswith("-") and self.unknown_command in self.commands:
            args = [self.unknown_command, *args]
        return super().parse_args(ctx, args)


class FbGroup(click.Group):
    """The root group: one-line errors, tracebacks only with ``-v``, plugin commands added once."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn library errors into one ``Error:`` line (a traceback only with ``-v``)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except FusionBenchError as exc:
            if verbose(ctx):
                stderr_console().print_exception(suppress=[click])
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:  # noqa: BLE001 - the CLI edge
            if verbose(ctx):
                stderr_console().print_exception(suppress=[click])
                raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
            raise click.ClickException(f"{type(exc).__name__}: {exc} (re-run with -v for the traceback)") from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """Look ``name`` up among the built-in commands and those plugins add."""
        get_host().add_commands(self)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in and plugin commands, sorted."""
        get_host().add_commands(self)
        return super().list_commands(ctx)


def verbose(ctx: click.Context) -> bool:
    """Whether ``-v`` (or ``FB_DEBUG=1``) asks for tracebacks."""
    root = ctx.find_root()
    return bool((root.params or {}).get("verbose")) or os.environ.get("FB_DEBUG") == "1"
