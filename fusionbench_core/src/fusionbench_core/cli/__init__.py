"""The ``fb`` command line: run, merge, evaluate and list what is installed.

One module per noun (:mod:`.run`, :mod:`.eval`, :mod:`.merge`, :mod:`.listing`, :mod:`.suites`,
:mod:`.plugins`, :mod:`.info`); :mod:`.render` prints everything and :mod:`.groups` holds the click
groups. The commands are thin: the programs they call live in :mod:`fusionbench_core.run` and
:mod:`fusionbench_core.merge`.

Data goes to stdout (rich tables, or JSON with ``--json``); progress and errors go to stderr.
A :class:`~fusionbench_core.errors.FusionBenchError` prints one ``Error:`` line and exits 1;
any other exception does the same unless ``-v`` asks for the traceback. Plugins add commands
through the ``register_commands`` hook, called once per root group.
"""

from __future__ import annotations

import click

from .. import __version__
from .eval import eval_command
from .groups import CONTEXT, DefaultGroup, FbGroup
from .info import info_command
from .listing import methods, modelpools, taskpools
from .merge import merge_command
from .plugins import plugins_command
from .render import print_json, print_report
from .run import run_command
from .suites import suites
from .compare import compare_command  # noqa: I001 - experiments (#16)
from .agree import agree_command
from .plot import plot_command
from .report import report_command
from .results import results
from .sweep import sweep_command
from .table import table_command

__all__ = ["CONTEXT", "DefaultGroup", "FbGroup", "cli", "main", "make_cli", "print_json", "print_report"]


def make_cli() -> FbGroup:
    """A fresh ``fb`` root group with the built-in commands; plugin commands arrive on first lookup."""

    @click.group(name="fb", cls=FbGroup, context_settings=CONTEXT)
    @click.version_option(__version__, "--version", prog_name="fb")
    @click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
    def root(verbose: bool) -> None:
        """FusionBench: fuse fine-tuned models and evaluate the result on every task.

        \b
        Examples:
          fb run                                  # task arithmetic on the offline mini-vision suite
          fb run -m ties -s scaling_factor=0.5 -p mini-text
          fb methods                              # what is installed
          fb merge ties --pretrained base/ --model a/ --model b/ -o merged/
        """

    for command in (run_command, eval_command, merge_command, methods, modelpools, taskpools, suites,
                    plugins_command, info_command, sweep_command, results, table_command, compare_command,
                    plot_command, report_command, agree_command):
        root.add_command(command)
    return root


cli = make_cli()
"""The ``fb`` root group."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fb")
