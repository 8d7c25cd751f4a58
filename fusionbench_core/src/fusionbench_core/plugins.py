"""Plugin discovery: the ``fusionbench`` entry-point group, pluggy hooks and the registries.

Every method, model pool and task pool, the built-in ones included, arrives through the same path:
a module listed under ``[project.entry-points.fusionbench]`` whose ``register_*`` hooks call
``register(name, "package.module:Class", ...)``.

Each plugin is loaded and validated on its own: one that fails to import, implements a hook that
does not exist (a misspelt ``register_method``) or raises in a hook is unregistered and listed by
``fb plugins`` with its error, and everything else keeps working. The host calls each plugin's
``register_*`` implementation directly (so every entry knows its plugin); pluggy's hookwrappers
and ``tryfirst``/``trylast`` therefore do not apply to those hooks.

Environment variables:

``FUSIONBENCH_LOAD_PLUGINS``
    Comma-separated entry-point or distribution names: load only these (an empty value loads none).
``FUSIONBENCH_DISABLE_PLUGINS``
    Comma-separated entry-point or distribution names never to load.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateNameError, PluginLoadError
from .registry import KINDS, Entry, Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
LOAD_ENV = "FUSIONBENCH_LOAD_PLUGINS"
DISABLE_ENV = "FUSIONBENCH_DISABLE_PLUGINS"

INSTALL_HINTS: dict[str, tuple[str, ...]] = {
    "": ("fusionbench-methods", "fusionbench-data-methods"),
    "clip-": ("fusionbench-vision",),
    "mini-vision": ("fusionbench-vision",),
    "gpt2-": ("fusionbench-nlp",),
    "flan-t5-": ("fusionbench-nlp",),
    "mini-text": ("fusionbench-nlp",),
}
"""Name prefixes and the distributions that provide them; shown only for what is not installed."""

PLUGIN_COMMANDS_ATTR = "_fusionbench_plugin_commands_from"
"""Attribute set on a click group once plugin commands were added to it (holds the host that added them)."""

_HOOK_FOR_KIND = {"method": "register_methods", "modelpool": "register_modelpools", "taskpool": "register_taskpools"}


@dataclass
class PluginRecord:
    """A plugin as ``fb plugins`` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    status: str = "loaded"
    """``loaded``, ``failed``, ``blocked`` or ``skipped`` (not in FUSIONBENCH_LOAD_PLUGINS)."""
    conflicts: list[str] = field(default_factory=list)
    """Names this plugin registered that another plugin registered too (each message names both)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "hooks": self.hooks,
            "error": self.error,
            "conflicts": list(self.conflicts),
        }


def _split_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginHost:
    """The plugin manager together with what it loaded and the registries it filled."""

    def __init__(self, *, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.conflicts: list[str] = []
        self._registries: dict[str, Registry] | None = None
        if load_entry_points:
            self._load_entry_points()

    # -- discovery -------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        only = _split_env(LOAD_ENV)
        blocked = _split_env(DISABLE_ENV) or set()
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                distribution=dist.name if dist else "(unknown)",
                version=dist.version if dist else "",
                module=ep.value,
            )
            if ep.name in self.records:
                continue  # the same distribution seen twice on sys.path
            self.records[ep.name] = record
            if ep.name in blocked or record.distribution in blocked:
                record.status = "blocked"
                self.pm.set_blocked(ep.name)
                continue
            if only is not None and ep.name not in only and record.distribution not in only:
                record.status = "skipped"
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                record.status = "failed"
                record.error = f"{type(exc).__name__}: {exc}"
                continue
            problem = self._unknown_hooks(plugin)
            if problem:
                self.pm.unregister(plugin)
                record.status = "failed"
                record.error = problem
                continue
            record.hooks = sorted(impl.name for impl in self._impls_of(plugin))

    def _impls_of(self, plugin: object) -> list[Any]:
        hookcallers = self.pm.get_hookcallers(plugin) or []
        return list(hookcallers)

    def _unknown_hooks(self, plugin: object) -> str | None:
        """A one-line error for hook implementations of ``plugin`` that match no hookspec, else None."""
        specs = sorted(name for name in vars(hookspecs) if hasattr(getattr(hookspecs, name), "fusionbench_spec"))
        for caller in self._impls_of(plugin):
            if caller.has_spec():
                continue
            if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
                continue
            close = difflib.get_close_matches(caller.name, specs, n=1)
            hint = f" Did you mean: {close[0]}?" if close else f" Hooks are: {', '.join(specs)}."
            return f"unknown hook '{caller.name}' (no such hookspec).{hint}"
        return None

    def register_plugin(self, plugin: object, name: str, distribution: str = "(inline)") -> None:
        """Register a plugin object (a module or an instance with hookimpls) in code, e.g. in tests.

        Raises :class:`~fusionbench_core.errors.PluginLoadError` (and registers nothing) when the
        object implements a hook that does not exist.
        """
        self.pm.register(plugin, name=name)
        problem = self._unknown_hooks(plugin)
        if problem:
            self.pm.unregister(plugin)
            raise PluginLoadError(f"plugin '{name}': {problem}")
        self.records[name] = PluginRecord(
            name=name,
            distribution=distribution,
            version="",
            module=getattr(plugin, "__name__", type(plugin).__name__),
            hooks=sorted(impl.name for impl in self._impls_of(plugin)),
        )
        self._registries = None

    def unregister_plugin(self, name: str) -> None:
        """Undo :meth:`register_plugin`."""
        self.pm.unregister(name=name)
        self.records.pop(name, None)
        self._registries = None

    # -- registries ------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (``method``, ``modelpool`` or ``taskpool``), built on first use."""
        if self._registries is None:
            self._registries = self._build_registries()
        return self._registries[kind]

    def _build_registries(self) -> dict[str, Registry]:
        registries = {kind: Registry(kind, INSTALL_HINTS) for kind in KINDS}
        self.conflicts = []
        for record in self.records.values():
            record.conflicts = []
        for kind in KINDS:
            hook = getattr(self.pm.hook, _HOOK_FOR_KIND[kind])
            # Most recently registered impls come first in pluggy; sort for a stable first owner.
            for impl in sorted(hook.get_hookimpls(), key=lambda i: i.plugin_name):
                record = self.records.get(impl.plugin_name)
                register = self._register_callback(registries[kind], kind, impl.plugin_name, record)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as exc:  # noqa: BLE001 - reported by `fb plugins`
                    if record is not None:
                        record.status = "failed"
                        record.error = f"{_HOOK_FOR_KIND[kind]}: {type(exc).__name__}: {exc}"
        return registries

    def _register_callback(
        self, registry: Registry, kind: str, plugin_name: str, record: PluginRecord | None
    ) -> Callable[..., None]:
        distribution = record.distribution if record else "(inline)"

        def register(
            name: str, target: Any, *, summary: str = "", aliases: tuple[str, ...] = (), **metadata: Any
        ) -> None:
            if not summary and not isinstance(target, str):
                summary = ((getattr(target, "__doc__", None) or "").strip().splitlines() or [""])[0]
            entry = Entry(
                kind=kind,
                name=name,
                target=target,
                plugin=plugin_name,
                distribution=distribution,
                summary=summary,
                aliases=tuple(aliases),
                metadata=dict(metadata),
            )
            try:
                registry.add(entry)
            except DuplicateNameError as exc:
                self.conflicts.append(str(exc))
                registry.mark_conflict(name, str(exc))
                for owner in exc.plugins:
                    if owner in self.records and str(exc) not in self.records[owner].conflicts:
                        self.records[owner].conflicts.append(str(exc))

        return register

    # -- listing ---------------------------------------------------------------------------

    def plugin_rows(self) -> list[dict[str, Any]]:
        """Every plugin with its status and error, sorted by name."""
        for kind in KINDS:  # building the registries fills in hook failures
            self.registry(kind)
        return [self.records[name].describe() for name in sorted(self.records)]

    def call_hook(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook of every plugin (``run_started``, ``run_finished``)."""
        return getattr(self.pm.hook, hook_name)(**kwargs)

    def add_commands(self, group: Any) -> None:
        """Let every plugin's ``register_commands`` add to ``group``, once per group and host.

        The group remembers the host that filled it in an attribute, so repeated lookups cost
        nothing, and a group built after a plugin was registered (or a new host) gets its commands.
        A plugin whose hook raises is marked failed; the others' commands still arrive.
        """
        if getattr(group, PLUGIN_COMMANDS_ATTR, None) is self:
            return
        setattr(group, PLUGIN_COMMANDS_ATTR, self)
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(**{arg: group for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - reported by `fb plugins`
                record = self.records.get(impl.plugin_name)
                if record is not None:
                    record.status = "failed"
                    record.error = f"register_commands: {type(exc).__name__}: {exc}"


_default_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loading entry points on first use."""
    global _default_host
    if _default_host is None:
        _default_host = PluginHost()
    return _default_host


def reset_host() -> None:
    """Forget the process-wide host, so the next :func:`get_host` rediscovers plugins."""
    global _default_host
    _default_host = None


@contextmanager
def registered_plugin(plugin: object, name: str | None = None) -> Iterator[PluginHost]:
    """Register ``plugin`` on the process-wide host for the duration of a ``with`` block."""
    host = get_host()
    plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    host.register_plugin(plugin, plugin_name)
    try:
        yield host
    finally:
        host.unregister_plugin(plugin_name)
