"""``fb table``: the leaderboard (method × task) of the result store, as Markdown, CSV, LaTeX or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json
from .sweep import leaderboard_options, store_option


@click.command(name="table", context_settings=CONTEXT)
@store_option
@click.option("-f", "--format", "fmt", type=click.Choice(["markdown", "csv", "latex", "html"]), default="markdown",
              show_default=True, help="Output format.")
@leaderboard_options
@click.option("-m", "--method", "methods", multiple=True, help="Only these methods (repeatable).")
@click.option("--metric", default="accuracy", show_default=True, help="Metric to tabulate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (through a temporary file) instead of stdout; refused when it exists.")
@click.option("--overwrite", is_flag=True, help="Let -o replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
def table_command(store_path: Path | None, fmt: str, select_on: str, suite: str | None, sweep: str | None,
                  methods: tuple[str, ...], metric: str, output: Path | None, overwrite: bool, as_json: bool) -> None:
    """Render the leaderboard: each method's test scores with hyperparameters selected on validation.

    Per task and on average: mean ± std over seeds of the selected setting, the normalised accuracy
    (merged ÷ individual), the mean wall time of a run and the selected hyperparameters. The caption
    says which split selected them.

    \b
    Examples:
      fb table
      fb table --format latex -o table.tex
      fb table --format latex -o table.tex --overwrite     # replace the table written before
      fb table --suite tiny --select-on test --json
    """
    from ..experiments.store import open_store
    from ..experiments.tables import build_leaderboards, render

    if output is not None:
        check_output_file(output, overwrite=overwrite)
    with open_store(store_path, readonly=True) as store:
        boards = build_leaderboards(store, select_on=select_on, metric=metric, suite=suite, sweep=sweep,
                                    methods=methods or None)
    if as_json:
        print_json([{"suite": b.suite, "select_on": b.select_on, **row.to_dict()} for b in boards for row in b.rows])
        return
    text = render(boards, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_text_atomic(output, text)


def check_output_file(path: Path, *, overwrite: bool) -> None:
    """Refuse (before anything is computed) an output file that exists unless ``overwrite``, and a directory always."""
    from ..errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"output '{path}' is a directory; give a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"'{path}' exists; pass --overwrite to replace it")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling renamed into place."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling renamed into place."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
