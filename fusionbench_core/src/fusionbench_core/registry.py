"""Name-keyed registries of methods, model pools and task pools.

Plugins register a lazy ``"package.module:Attr"`` string (or the object itself). Listings read
only the registered metadata, so ``fb methods`` never imports a method's module (nor torch).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DuplicateNameError, PluginLoadError, UnknownComponentError

KINDS = ("method", "modelpool", "taskpool")
LABELS = {"method": "method", "modelpool": "model pool", "taskpool": "task pool"}
"""How messages name each kind."""


@dataclass
class Entry:
    """One registered component."""

    kind: str
    name: str
    target: Any
    """A class (or factory), or a lazy ``"package.module:Attr"`` string."""
    plugin: str
    """The registering plugin's entry-point name (or module name for inline plugins)."""
    distribution: str
    """The distribution (pip package) that owns the plugin, ``"(inline)"`` when registered in code."""
    summary: str = ""
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def target_path(self) -> str:
        """The target as ``module:attr`` text."""
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{getattr(self.target, '__qualname__', repr(self.target))}"

    def load(self) -> Any:
        """Import and return the target (cached after the first call)."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            try:
                module = importlib.import_module(module_name)
                obj = module
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported in one line
                raise PluginLoadError(
                    f"{self.kind} '{self.name}' from plugin '{self.plugin}' ({self.distribution}) "
                    f"could not be loaded from '{self.target}': {type(exc).__name__}: {exc}"
                ) from exc
            self.target = obj
        return self.target

    def describe(self) -> dict[str, Any]:
        """JSON-ready listing row (no import)."""
        row = {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "target": self.target_path,
            "plugin": self.plugin,
            "distribution": self.distribution,
        }
        if self.aliases:
            row["aliases"] = list(self.aliases)
        row.update(self.metadata)
        return row


def is_installed(distribution: str) -> bool:
    """Whether a distribution (pip package) of that name is installed."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class Registry:
    """Components of one kind keyed by name; a duplicate name is an error naming both owners.

    ``install_hints`` maps a name prefix to the distributions that provide names of that prefix
    (``{"clip-": ("fusionbench-vision",)}``; the prefix ``""`` for methods at large). An unknown
    name gets the hint only when no registered name has the prefix and a listed distribution is
    not installed, so users are never told to install what they have.
    """

    def __init__(self, kind: str, install_hints: Mapping[str, str | tuple[str, ...]] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._conflicts: dict[str, str] = {}
        self.install_hints = {prefix: (packages,) if isinstance(packages, str) else tuple(packages)
                              for prefix, packages in (install_hints or {}).items()}

    def add(self, entry: Entry) -> None:
        """Add ``entry``; raise :class:`DuplicateNameError` if its name or an alias is taken."""
        for key in (entry.name, *entry.aliases):
            owner = self._entries.get(key) or self._entries.get(self._aliases.get(key, ""))
            if owner is not None:
                raise DuplicateNameError(
                    f"{self.kind} '{key}' is registered twice: by plugin '{owner.plugin}' "
                    f"({owner.distribution}) and by plugin '{entry.plugin}' ({entry.distribution}); "
                    "uninstall one or block it with FUSIONBENCH_DISABLE_PLUGINS",
                    plugins=(owner.plugin, entry.plugin),
                )
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name

    def mark_conflict(self, name: str, message: str) -> None:
        """Remember that ``name`` was claimed twice: using it raises ``message``; listing keeps the first."""
        self._conflicts[name] = message

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def entry(self, name: str) -> Entry:
        """The entry for ``name`` (or an alias); raise a did-you-mean error if unknown."""
        if name in self._conflicts:
            raise DuplicateNameError(self._conflicts[name])
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise UnknownComponentError(self.kind, name, [*self._entries, *self._aliases], self.install_hint(name),
                                        label=LABELS.get(self.kind, self.kind))
        return self._entries[key]

    def install_hint(self, name: str) -> str:
        """``pip install …`` advice for an unknown ``name``, or ``""`` when it would not help."""
        names = [*self._entries, *self._aliases]
        for prefix, packages in self.install_hints.items():
            if not prefix or not name.startswith(prefix):
                continue
            missing = [package for package in packages if not is_installed(package)]
            if missing and not any(known.startswith(prefix) for known in names):
                return f"Suites named '{prefix}…' come with: pip install {' or '.join(missing)}"
            return ""
        if not names and self.kind == "method" and "" in self.install_hints:
            missing = [package for package in self.install_hints[""] if not is_installed(package)]
            if missing:
                return f"Methods come with: pip install {' or '.join(missing)}"
        return ""

    def get(self, name: str) -> Any:
        """Load and return the component registered as ``name``."""
        return self.entry(name).load()
