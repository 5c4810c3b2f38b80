"""Hook implementations of the plugin (see host_app/hookspecs.py)."""
