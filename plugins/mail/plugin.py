"""Hook implementations of the mail core (see host_app/hookspecs.py)."""
from __future__ import annotations

from host_app import hookimpl

from . import (
    hookspecs,
    models,  # noqa: F401  (registers the plugin's tables)
)


@hookimpl
def add_hookspecs(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)
