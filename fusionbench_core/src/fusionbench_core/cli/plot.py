"""``fb plot``: PNG figures of the result store (λ curves, per-task heatmaps) with matplotlib."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json, stderr_console
from .sweep import leaderboard_options, store_option


@click.command(name="plot", context_settings=CONTEXT)
@store_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("fb-plots"),
              show_default=True, help="Directory for the PNGs.")
@leaderboard_options
@click.option("--overwrite", is_flag=True, help="Replace PNGs of the same names already in the directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as a JSON list.")
def plot_command(store_path: Path | None, output: Path, select_on: str, suite: str | None, sweep: str | None,
                 overwrite: bool, as_json: bool) -> None:
    """Write λ curves (lambda-SUITE.png) and per-task heatmaps (heatmap-SUITE.png) as PNGs.

    Needs matplotlib (`pip install 'fusionbench-core[plots]'`). A PNG of the same name already in
    the directory is refused unless --overwrite.

    \b
    Examples:
      fb plot -o figures/
      fb plot --suite tiny --json
    """
    from ..errors import ConfigError
    from ..experiments.plots import figures
    from ..experiments.store import open_store
    from ..experiments.tables import build_leaderboards
    from .table import write_bytes_atomic

    with open_store(store_path, readonly=True) as store:
        boards = build_leaderboards(store, select_on=select_on, suite=suite, sweep=sweep)
    pngs = figures(boards)
    if not overwrite:
        for name in pngs:
            if (output / name).exists():
                raise ConfigError(f"'{output / name}' exists; pass --overwrite to replace it")
    written = []
    for name, data in pngs.items():
        write_bytes_atomic(output / name, data)
        written.append(str(output / name))
    if as_json:
        print_json(written)
    else:
        for path in written:
            click.echo(path)
        stderr_console().print(f"[dim]{len(written)} figure(s) in {output}[/dim]")
