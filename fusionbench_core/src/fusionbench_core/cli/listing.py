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
    if kind == "method":
        from ..needs import pool_support
        from ..protocols import method_needs

        details["needs"] = [need.value for need in method_needs(target)]
        details["pools"] = pool_support(get_host(), target)
    describe_more = getattr(target, "describe_suite", None)
    if callable(describe_more):
        details.update(describe_more())
    return details


def support_text(needs: list[str], pools: list[dict]) -> dict[str, str]:
    """``fb methods show``'s lines on pools: what the method needs, the suites it runs on and those it does not."""
    from ..protocols import CAPABILITY_TEXT, Capability

    def label(row: dict) -> str:
        count = len(row["pools"])
        return row["family"] + (f" ({count})" if count > 1 else "")

    lines = {"needs": "; ".join(CAPABILITY_TEXT[Capability(need)] for need in needs) or "weights only"}
    if Capability.TWO_MODELS.value in needs:
        lines["needs"] += " (choose two with the pool's options, e.g. -s modelpool.tasks=A,B)"
    lines["runs on"] = ", ".join(label(row) for row in pools if row["runs"]) or "no registered suite"
    def lacking(row: dict) -> str:
        why = row.get("why", {})
        return "; ".join(f"{name}: {why[name]}" if name in why else name for name in row["missing"])

    refused = [f"{label(row)} (lacks {lacking(row)})" for row in pools if row["runs"] is False]
    if refused:
        lines["not on"] = ", ".join(refused)
    unknown = [label(row) for row in pools if row["runs"] is None]
    if unknown:
        lines["checked when run"] = ", ".join(unknown) + " (declare nothing on what it needs)"
    return lines


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
        if kind == "method":
            details.update(support_text(details.pop("needs"), details.pop("pools")))
        print_mapping(f"{kind} {name}", details)
        if params:
            print_parameters(PARAMETERS[kind], params)

    return group


methods = listing_group("method", "methods", "fusion methods")
modelpools = listing_group("modelpool", "modelpools", "model pools")
taskpools = listing_group("taskpool", "taskpools", "task pools")
