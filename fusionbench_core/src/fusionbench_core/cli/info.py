"""``fb info``: versions of Python, FusionBench, torch (and CUDA) and every installed plugin."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from ..plugins import get_host
from .groups import CONTEXT
from .render import print_json, print_mapping


@click.command(name="info", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_command(as_json: bool) -> None:
    """Versions of Python, FusionBench, torch (and CUDA) and every installed plugin.

    \b
    Examples:
      fb info
      fb info --json
    """
    import importlib.metadata
    import platform

    data: dict[str, Any] = {"python": platform.python_version(), "fusionbench-core": __version__}
    for name in ("torch", "transformers", "datasets", "peft", "safetensors"):
        try:
            data[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            data[name] = None
    if data["torch"]:
        import torch

        data["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        data["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    host = get_host()
    data["plugins"] = {row["name"]: f"{row['distribution']} {row['version']} ({row['status']})" for row in host.plugin_rows()}
    if as_json:
        print_json(data)
    else:
        print_mapping("fb info", data)
