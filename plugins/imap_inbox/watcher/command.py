"""``manage.py watch``: run a watcher until SIGTERM or Ctrl-C."""
from __future__ import annotations

import logging
import resource

import click
from flask import current_app

from .memory import two_malloc_arenas
from .supervisor import Watcher


@click.command("watch")
def watch_command():
    """Keep an IMAP IDLE connection per enabled inbox; new mail is synced within seconds.

    Run as many as you like, on any machines sharing the Redis: they split the inboxes between them.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_open_files_limit()
    two_malloc_arenas()
    Watcher(current_app._get_current_object()).run()


def _raise_open_files_limit() -> None:
    """One socket per inbox: the usual soft limit of 1,024 open files would cap a watcher below that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            logging.getLogger(__name__).warning("could not raise the open files limit above %s", soft)
