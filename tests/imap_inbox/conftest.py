"""The imap_inbox plugin: connecting, syncing, jobs, timelines, the CLI and the settings pages.

Its tests use ``dovecot``, ``mailbox`` and ``owner`` from tests/conftest.py and the set-ups in
tests/support/imap_helpers.py.
"""
