"""Hook implementations of the mail core (see host_app/hookspecs.py)."""
from __future__ import annotations

from . import models  # noqa: F401  (registers the plugin's tables)
