"""``fb agree``: a suite's leaderboard beside a published one: Spearman, Kendall, gap shares."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from .groups import CONTEXT
from .render import print_json, print_listing, stdout_console
from .sweep import store_option


def _names(values: tuple[str, ...]) -> list[str] | None:
    """``--held-out a,b --held-out c`` as ``[a, b, c]``; None when not given."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@click.command(name="agree", context_settings=CONTEXT)
@click.option("--list", "list_boards", is_flag=True, help="List the shipped published leaderboards.")
@click.option("--against", "board_id", metavar="ID", help="Published leaderboard to compare with (fb agree --list).")
@click.option("--suite", help="Our side: this suite's leaderboard in the result store, as fb table builds it.")
@store_option
@click.option("--sweep", help="Only runs of this sweep.")
@click.option("--select-on", type=click.Choice(["validation", "test", "none"]), default="validation",
              show_default=True,
              help="Split on which each method's hyperparameters are chosen, as in fb table (test: oracle; "
                   "none: one setting per method, taken as it is).")
@click.option("--from-json", "from_json", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help='Our side from a JSON file instead of the store: {"method": average, ..., '
                   '"_pretrained_": x, "_individual_": y}.')
@click.option("--held-out", "held_out", multiple=True, metavar="M1,M2",
              help="Held-out methods (comma-separated, repeatable): agreement is also given over them and over "
                   "the other shared methods.")
@click.option("--verified-only", is_flag=True, help="Use only published figures whose status is 'verified'.")
@click.option("--resamples", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Bootstrap resamples (of the methods).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the comparison to this file (Markdown, or JSON with --json), through a temporary file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison (or the --list rows) as JSON.")
def agree_command(list_boards: bool, board_id: str | None, suite: str | None, store_path: Path | None,
                  sweep: str | None, select_on: str, from_json: Path | None, held_out: tuple[str, ...],
                  verified_only: bool, resamples: int, seed: int, level: float, output: Path | None, overwrite: bool,
                  as_json: bool) -> None:
    """Set a suite's leaderboard beside a published one: do the two rank the methods alike?

    Over the methods both have: each side's average, its share of the gap recovered,
    (method − pretrained) / (individual − pretrained), and its rank; then Spearman's ρ and
    Kendall's τ-b with bootstrap intervals over the methods. With --held-out, also over the
    held-out methods and over the rest. Published figures carry their source (fb agree --list).

    \b
    Examples:
      fb agree --list
      fb agree --suite mini-vision --against fusionbench-clip-vit-b32-ta8
      fb agree --suite mini-vision --against fusionbench-clip-vit-b32-ta8 --held-out tsv_m,iso_c,smile
      fb agree --from-json mine.json --against openclip-vit-b32-ta8 --json -o agreement.json
    """
    from ..experiments import agreement

    if list_boards:
        rows = agreement.leaderboard_summaries()
        if as_json:
            print_json(rows)
        else:
            print_listing(f"{len(rows)} published leaderboards", [
                {**r, "tasks": len(r["tasks"]), "methods": f"{r['methods']} ({r['matched']} matched)"} for r in rows],
                ("id", "model", "tasks", "methods", "source"))
        return
    if board_id is None:
        raise ConfigError("--against ID is required (fb agree --list shows the published leaderboards)")
    agreement.published_leaderboard(board_id)  # an unknown id fails before the store is read
    if (from_json is None) == (suite is None):
        raise ConfigError("give either --suite (read the result store) or --from-json FILE")
    if from_json is not None and (store_path is not None or sweep is not None):
        raise ConfigError("--store and --sweep read the result store; they do not go with --from-json")
    if output is not None and output.exists() and not overwrite:
        raise ConfigError(f"'{output}' exists; pass --overwrite to replace it")

    if from_json is not None:
        try:
            data = json.loads(from_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read JSON file '{from_json}': {exc}") from None
        ours = agreement.scores_from_json(data, name=f"JSON file '{from_json}'")
        label = from_json.name
    else:
        from ..experiments.store import open_store

        with open_store(store_path) as store:
            ours = agreement.scores_from_store(store, suite=suite, select_on=select_on, sweep=sweep)
        label = f"{ours['suite']} (select on {select_on})"
    result = agreement.compare(ours["scores"], board_id, pretrained=ours["pretrained"],
                               individual=ours["individual"], held_out=_names(held_out),
                               statuses=("verified",) if verified_only else agreement.STATUSES,
                               resamples=resamples, seed=seed, level=level)
    result = {"ours": label, "select_on": ours.get("select_on"), "left_out": ours.get("left_out", []), **result}

    if as_json:
        print_json(result)
    else:
        _print(result, label)
    if output is not None:
        from .table import write_text_atomic

        text = (json.dumps(result, indent=2) + "\n") if as_json else agreement.render_markdown(result, label)
        write_text_atomic(output, text)


def _print(result: dict, label: str) -> None:
    """The comparison as two rich tables and a caption."""
    from rich.table import Table

    from ..experiments.agreement import GROUP_TITLES, caption, interval, number, rank

    console = stdout_console()
    table = Table(title=f"{label} against {result['against']}", caption=f"{result['title']}; {result['source']}")
    for column in ("method", "published as", "ours", "published", "gap share ours", "gap share published",
                   "rank ours", "rank published"):
        table.add_column(column, justify="left" if column in ("method", "published as") else "right")
    for row in result["methods"]:
        table.add_row(row["method"] + (" *" if row["held_out"] else ""), row["published_name"], number(row["ours"]),
                      number(row["published"]), number(row["gap_share_ours"]), number(row["gap_share_published"]),
                      rank(row["rank_ours"]), rank(row["rank_published"]))
    table.add_section()
    refs = result["references"]
    for kind in ("pretrained", "individual"):
        table.add_row(f"_{kind}_", "", number(refs["ours"][kind]), number(refs["published"][kind]), "", "", "", "",
                      style="dim")
    console.print(table)
    level = round(100 * result["agreement"]["all"]["level"])
    stats = Table(title="rank agreement" + (" (* held out)" if result["held_out"] else ""))
    for column in ("methods", "n", f"Spearman ρ [{level} % CI]", f"Kendall τ-b [{level} % CI]"):
        stats.add_column(column, justify="right" if column == "n" else "left")
    for group, values in result["agreement"].items():
        stats.add_row(GROUP_TITLES[group], str(values["n"]), interval(values["spearman"]), interval(values["kendall"]))
    console.print(stats)
    notes = [caption(result)]
    if result["protocol"]:
        notes.append("published protocol: " + "; ".join(result["protocol"]) + ".")
    if result["unmatched"]["ours"]:
        notes.append(f"not in the published leaderboard: {', '.join(result['unmatched']['ours'])}")
    if result["left_out"]:
        notes.append(f"left out (no {result['select_on']} scores): {', '.join(result['left_out'])}")
    for note in notes:
        console.print(note)
