"""``fb report``: one static, self-contained HTML page of the result store."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import stderr_console
from .sweep import leaderboard_options, store_option


@click.command(name="report", context_settings=CONTEXT)
@store_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("fb-report.html"),
              show_default=True, help="The HTML file to write.")
@leaderboard_options
@click.option("--title", default="FusionBench results", show_default=True, help="The page's title.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def report_command(store_path: Path | None, output: Path, select_on: str, suite: str | None, sweep: str | None,
                   title: str, overwrite: bool) -> None:
    """Write one self-contained HTML page: leaderboard, figures (embedded) and every run's details.

    The page opens offline; figures need matplotlib (`fusionbench-core[plots]`), else a note says so.

    \b
    Examples:
      fb report -o results.html
      fb report --suite tiny --select-on test -o oracle.html --overwrite
    """
    from ..errors import ConfigError
    from ..experiments.report import render_report
    from ..experiments.store import open_store
    from ..experiments.tables import build_leaderboards
    from .table import write_text_atomic

    if output.exists() and not overwrite:
        raise ConfigError(f"'{output}' exists; pass --overwrite to replace it")
    with open_store(store_path, readonly=True) as store:
        boards = build_leaderboards(store, select_on=select_on, suite=suite, sweep=sweep)
        page = render_report(store, boards, title=title, sweep=sweep)
    write_text_atomic(output, page)
    click.echo(str(output))
    stderr_console().print(f"[dim]{len(page) // 1024} KiB[/dim]")
