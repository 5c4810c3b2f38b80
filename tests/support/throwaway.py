"""Throwaway plugins for tests: a package made in memory, with a manifest and a hooks module."""
from __future__ import annotations

import contextlib
import sys
import textwrap
import types
from collections.abc import Iterator


@contextlib.contextmanager
def throwaway_plugin(name: str, source: str = "", depends=(), manifest_source: str | None = None) -> Iterator[dict]:
    """Make an importable plugin package ``throwaway_<name>``; yield ``{name: module}`` for ``PLUGINS``.

    ``source`` is the body of its ``plugin`` module. The modules are removed again afterwards.
    """
    package_name = f"throwaway_{name}"
    package = types.ModuleType(package_name)
    package.__path__ = []  # a package, so submodules can be imported
    package.__file__ = f"<{package_name}>"
    manifest = types.ModuleType(f"{package_name}.__manifest__")
    if manifest_source is None:
        manifest.MANIFEST = {"name": name, "version": "0.0.1", "description": f"test plugin {name}",
                             "depends": list(depends), "migrations": None}
    else:
        exec(textwrap.dedent(manifest_source), manifest.__dict__)
    hooks = types.ModuleType(f"{package_name}.plugin")
    exec(compile(textwrap.dedent(source), f"<{package_name}.plugin>", "exec"), hooks.__dict__)
    modules = {package_name: package, manifest.__name__: manifest, hooks.__name__: hooks}
    sys.modules.update(modules)
    try:
        yield {name: package_name}
    finally:
        for module_name in modules:
            sys.modules.pop(module_name, None)
