"""Finds plugins, orders them by their dependencies and registers the ones that may load.

A plugin is a Python package published under the ``host_app.plugins``
entry-point group. The package holds a ``__manifest__.py`` (Odoo style) with
``version``, ``description``, ``depends`` and optionally ``hooks`` (the module
with the hook implementations, default ``"plugin"``) and ``migrations`` (a
folder of Alembic revisions, default ``"migrations"``). The plugin's name is its
entry-point name.

A plugin that fails to import, lacks a dependency or has a disabled
dependency is not loaded; the reason is kept in :class:`PluginInfo` and shown
by ``manage.py plugins list`` and on Settings > Plugins. The app itself
always starts.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "host_app.plugins"
log = logging.getLogger(__name__)


class PluginError(Exception):
    """A plugin could not be found, imported or registered."""


@dataclasses.dataclass
class PluginInfo:
    """What the host knows about one plugin, loaded or not."""

    name: str
    module_name: str
    version: str = ""
    description: str = ""
    depends: tuple[str, ...] = ()
    enabled: bool = True
    loaded: bool = False
    error: str | None = None
    package: ModuleType | None = None
    hooks_module: str = "plugin"
    migrations: str = "migrations"

    @property
    def status(self) -> str:
        if self.loaded:
            return "loaded"
        if not self.enabled:
            return "disabled"
        return "failed" if self.error and self.error.startswith("failed") else "not loaded"

    @property
    def migrations_dir(self) -> Path | None:
        if self.package is None or not self.migrations:
            return None
        path = Path(self.package.__file__).parent / self.migrations
        return path if path.is_dir() else None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "depends": list(self.depends),
            "enabled": self.enabled,
            "loaded": self.loaded,
            "status": self.status,
            "error": self.error,
        }


def discover() -> dict[str, str]:
    """Return ``{plugin name: package module name}`` for every installed plugin.

    Reading the entry points scans every installed distribution's metadata (a hundredth of a second), which
    a process making many apps (the test suite: one or more per test) paid each time. The answer is kept
    until ``sys.path`` or one of its folders changes: installing or removing a package changes the folder
    its metadata lives in.
    """
    global _discovered
    installed = _import_path_state()
    if _discovered is None or _discovered[0] != installed:
        _discovered = (installed, {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return dict(_discovered[1])


_discovered: tuple[tuple, dict[str, str]] | None = None


def _import_path_state() -> tuple:
    """Each ``sys.path`` entry with its modification time (None where it is not a folder)."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def disabled_at_start(saved: dict[str, bool], forced_off: Iterable[str], forced_on: Iterable[str]) -> set[str]:
    """The plugins a process starting now leaves off: the choice saved in the database, then the environment,
    which wins over it."""
    return ({name for name, enabled in saved.items() if not enabled} | set(forced_off)) - set(forced_on)


def _read_manifest(info: PluginInfo) -> None:
    info.package = importlib.import_module(info.module_name)
    manifest_module = importlib.import_module(f"{info.module_name}.__manifest__")
    manifest = getattr(manifest_module, "MANIFEST", None)
    if not isinstance(manifest, dict):
        raise PluginError(f"{info.module_name}.__manifest__ has no MANIFEST dict")
    if manifest.get("name", info.name) != info.name:
        raise PluginError(f"manifest name {manifest['name']!r} differs from entry-point name {info.name!r}")
    info.version = str(manifest.get("version", ""))
    info.description = manifest.get("description", "")
    info.depends = tuple(manifest.get("depends", ()))
    info.hooks_module = manifest.get("hooks", "plugin")
    info.migrations = manifest.get("migrations", "migrations")


def dependency_order(infos: dict[str, PluginInfo]) -> list[str]:
    """Return plugin names so that every plugin comes after what it depends on.

    Plugins in a dependency cycle are left out and get an error.
    """
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> bool:
        if state.get(name) == "done":
            return True
        if name in chain:
            return False
        for dep in infos[name].depends:
            if dep in infos and not visit(dep, chain + (name,)):
                infos[name].error = infos[name].error or f"dependency cycle: {' -> '.join(chain + (name, dep))}"
                state[name] = "done"
                return False
        state[name] = "done"
        ordered.append(name)
        return True

    for name in sorted(infos):
        visit(name, ())
    return [n for n in ordered if not infos[n].error]


class HostPluginManager:
    """The app's pluggy manager plus the state of every known plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        # Historic: replayed for every plugin registered later, so each adds its own hooks as it loads.
        self.pm.hook.add_hookspecs.call_historic(kwargs={"pluginmanager": self.pm})
        from . import builtin

        self.pm.register(builtin, name="host")
        self.plugins: dict[str, PluginInfo] = {}
        self.load_order: list[str] = []

    @property
    def hook(self):
        return self.pm.hook

    def load(self, available: dict[str, str], disabled: set[str]) -> None:
        """Read manifests, order by ``depends`` and register every plugin that may load."""
        for name, module_name in sorted(available.items()):
            info = PluginInfo(name=name, module_name=module_name, enabled=name not in disabled)
            self.plugins[name] = info
            try:
                _read_manifest(info)
            except Exception as exc:  # a broken plugin must never take the app down
                info.error = f"failed to import: {exc.__class__.__name__}: {exc}"
                log.error("plugin %s failed to import:\n%s", name, traceback.format_exc())
        readable = {n: i for n, i in self.plugins.items() if i.package is not None}
        for name in dependency_order(readable):
            info = self.plugins[name]
            if not info.enabled:
                self.pm.set_blocked(name)
                continue
            missing = self._unmet_dependency(info)
            if missing:
                info.error = missing
                continue
            try:
                hooks = importlib.import_module(f"{info.module_name}.{info.hooks_module}")
                self.pm.register(hooks, name=name)
            except Exception as exc:
                info.error = f"failed to load: {exc.__class__.__name__}: {exc}"
                log.error("plugin %s failed to load:\n%s", name, traceback.format_exc())
                continue
            info.loaded = True
            self.load_order.append(name)

    def _unmet_dependency(self, info: PluginInfo) -> str | None:
        for dep in info.depends:
            other = self.plugins.get(dep)
            if other is None:
                return f"depends on {dep}, which is not installed"
            if not other.enabled:
                return f"depends on {dep}, which is disabled"
            if not other.loaded:
                return f"depends on {dep}, which is not loaded"
        return None

    def needed_by(self, name: str, enabled: set[str]) -> list[str]:
        """The plugins in ``enabled`` that depend on ``name``, directly or through another: they stop with it."""
        stopping = {name}
        while True:
            more = {other for other in enabled - stopping
                    if other in self.plugins and stopping & set(self.plugins[other].depends)}
            if not more:
                return sorted(stopping - {name})
            stopping |= more

    def loaded(self) -> list[PluginInfo]:
        """Loaded plugins in load (dependency) order."""
        return [self.plugins[name] for name in self.load_order]

    def call_each(self, hook_name: str, **kwargs):
        """Call one hook plugin by plugin, in pluggy's call order.

        Yields ``(plugin name, result, exception)``: unlike ``hook.X()``, one
        failing plugin does not stop the others, and callers learn who
        answered what.
        """
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                yield impl.plugin_name, None, exc
            else:
                yield impl.plugin_name, result, None

    def collect_by_key(self, hook_name: str, **kwargs) -> dict[str, Any]:
        """Call a hook whose answers are lists of items with a ``key``; return ``{key: item}``.

        When two plugins offer the same key, the first in pluggy's call order
        wins and the other's item is left out.
        """
        found: dict[str, Any] = {}
        for result in getattr(self.pm.hook, hook_name)(**kwargs):
            for item in result or []:
                found.setdefault(item.key, item)
        return found

    def is_loaded(self, name: str) -> bool:
        info = self.plugins.get(name)
        return bool(info and info.loaded)
