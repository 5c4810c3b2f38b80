"""The host: agents, contacts, hooks, the plugin manager, ``manage.py run``, the documented plugin contract.

Throwaway plugins for these tests come from tests/support/throwaway.py.
"""
