"""Hook implementations of imap_inbox (see host_app/hookspecs.py)."""
from . import models  # noqa: F401  (registers the plugin's tables)
