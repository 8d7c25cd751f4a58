"""``fb methods``, ``fb modelpools``, ``fb taskpools``: list what is installed, or show one."""

from __future__ import annotations

import click

from ..plugins import get_host
from .groups import CONTEXT, DefaultGroup
from .render import plain_doc, print_json, print_listing, print_mapping, print_parameters

PARAMETERS = {"method": "hyperparameters", "modelpool": "options", "taskpool": "options"}
"""Which class attribute declares a component's settings."""


def describe_component(kind: str, name: str) -> dict:
    """What ``fb <noun> show NAME`` prints: the registry row, the docstring and the declared settings."""
    entry = get_host().registry(kind).entry(name)
    details = entry.describe()
    target = entry.load()
    doc = (getattr(target, "__doc__", None) or "").strip()
    if doc:
        details["doc"] = plain_doc(doc)
    params = getattr(target, PARAMETERS[kind], None)
    if params:
        details[PARAMETERS[kind]] = [p.describe() for p in params]
    requirement = getattr(target, "requirement", None)
    if requirement is not None:
        details["requirement"] = getattr(requirement, "value", requirement)
    describe_more = getattr(target, "describe_suite", None)
    if callable(describe_more):
        details.update(describe_more())
    return details


def listing_group(kind: str, plural: str, what: str) -> click.Group:
    """The noun group for one kind: ``list`` (the default) and ``show NAME``."""

    @click.group(name=plural, cls=DefaultGroup, context_settings=CONTEXT,
                 help=f"List the installed {what} (`--json` for JSON), or show one.\n\n\b\nExamples:\n"
                      f"  fb {plural}\n  fb {plural} --json\n  fb {plural} show NAME\n  fb {plural} NAME --json")
    def group() -> None:
        pass

    @group.command(name="list", context_settings=CONTEXT,
                   help=f"List the installed {what}.\n\n\b\nExamples:\n  fb {plural} list\n  fb {plural} --json")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of rows).")
    def list_command(as_json: bool) -> None:
        rows = [entry.describe() for entry in get_host().registry(kind).entries()]
        if as_json:
            print_json(rows)
            return
        extra = "requirement" if kind == "method" else "tasks"
        print_listing(f"{len(rows)} {what}", rows, ("name", extra, "summary", "plugin"))

    @group.command(name="show", context_settings=CONTEXT,
                   help=f"Show one of the {what} in detail (imports it).\n\n\b\nExamples:\n"
                        f"  fb {plural} show NAME\n  fb {plural} NAME --json")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def show_command(name: str, as_json: bool) -> None:
        details = describe_component(kind, name)
        if as_json:
            print_json(details)
            return
        params = details.pop(PARAMETERS[kind], None)
        print_mapping(f"{kind} {name}", details)
        if params:
            print_parameters(PARAMETERS[kind], params)

    return group


methods = listing_group("method", "methods", "fusion methods")
modelpools = listing_group("modelpool", "modelpools", "model pools")
taskpools = listing_group("taskpool", "taskpools", "task pools")
