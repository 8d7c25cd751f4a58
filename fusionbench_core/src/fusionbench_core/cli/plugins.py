"""``fb plugins``: every plugin with its distribution, status, hooks, load error and name conflicts."""

from __future__ import annotations

import click

from ..plugins import get_host
from .groups import CONTEXT
from .render import print_json, print_plugins, stderr_console


@click.command(name="plugins", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of plugin records.")
def plugins_command(as_json: bool) -> None:
    """List plugins with their distribution, status, hooks, load errors and name conflicts.

    A record's `conflicts` lists the names it registered that another plugin registered too.

    \b
    Examples:
      fb plugins
      FUSIONBENCH_DISABLE_PLUGINS=ties fb plugins --json
    """
    host = get_host()
    rows = host.plugin_rows()
    if as_json:
        print_json(rows)
        return
    print_plugins(rows)
    for conflict in host.conflicts:
        stderr_console().print(f"[red]conflict:[/red] {conflict}")
