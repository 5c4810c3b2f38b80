"""``manage.py watch``: run a watcher until SIGTERM or Ctrl-C."""
from __future__ import annotations

import logging

import click
from flask import current_app

from .supervisor import Watcher


@click.command("watch")
def watch_command():
    """Keep an IMAP IDLE connection per enabled inbox; new mail is synced within seconds.

    Run as many as you like, on any machines sharing the Redis: they split the inboxes between them.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Watcher(current_app._get_current_object()).run()
