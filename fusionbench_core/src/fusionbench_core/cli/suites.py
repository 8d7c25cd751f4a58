"""``fb suites``: list the suites and build the ones that need building."""

from __future__ import annotations

import click

from ..plugins import get_host
from .groups import CONTEXT, DefaultGroup
from .render import print_json, print_listing, print_mapping


@click.group(name="suites", cls=DefaultGroup, context_settings=CONTEXT)
def suites() -> None:
    """List the suites (model pool + task pool of one name) and build the ones that need building.

    \b
    Examples:
      fb suites
      fb suites --json
      fb suites show mini-vision
      fb suites build mini-vision --quick
    """


@suites.command(name="list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of rows).")
def suites_list(as_json: bool) -> None:
    """List suites: names registered both as a model pool and as a task pool.

    \b
    Examples:
      fb suites list
      fb suites --json
    """
    host = get_host()
    taskpools = set(host.registry("taskpool").names())
    rows = [entry.describe() for entry in host.registry("modelpool").entries() if entry.name in taskpools]
    if as_json:
        print_json(rows)
        return
    print_listing(f"{len(rows)} suites", rows, ("name", "tasks", "summary", "plugin"))


@suites.command(name="build", context_settings=CONTEXT)
@click.argument("name")
@click.option("--quick", is_flag=True, help="The reduced variant (fewer steps and examples), as CI uses.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the expert training.")
@click.option("--force", is_flag=True, help="Rebuild even what is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def suites_build(name: str, quick: bool, seed: int, force: bool, as_json: bool) -> None:
    """Build a suite's models (train the experts) into the cache, resuming what is done.

    \b
    Examples:
      fb suites build mini-vision
      fb suites build mini-text --quick --seed 1 --json
    """
    pool_cls = get_host().registry("modelpool").get(name)
    build = getattr(pool_cls, "build_suite", None)
    if build is None:
        from ..errors import ConfigError

        raise ConfigError(f"model pool '{name}' has nothing to build (it loads its models as they are)")
    summary = build(quick=quick, seed=seed, force=force) or {}
    if as_json:
        print_json({"name": name, "quick": quick, "seed": seed, **summary})
    elif summary:
        print_mapping(f"built {name}", summary)


@suites.command(name="show", context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def suites_show(name: str, as_json: bool) -> None:
    """Show one suite: its tasks, its variants' fingerprints, which seeds are built, and older builds in the cache.

    \b
    Examples:
      fb suites show mini-vision
      fb suites show mini-text --json
    """
    from ..errors import ConfigError
    from .listing import describe_component

    host = get_host()
    if name not in set(host.registry("taskpool").names()):
        host.registry("modelpool").get(name)  # an unknown name gets the registry's did-you-mean error
        raise ConfigError(f"'{name}' is a model pool without a task pool of the same name, not a suite")
    details = describe_component("modelpool", name)
    details.pop("options", None)
    if as_json:
        print_json(details)
        return
    print_mapping(f"suite {name}", details)
