"""``manage.py watch``: run a watcher until SIGTERM or Ctrl-C."""
from __future__ import annotations

import ctypes
import logging
import platform
import resource

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
    _raise_open_files_limit()
    _two_malloc_arenas()
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


# glibc's mallopt parameter for the most malloc arenas (malloc.h).
M_ARENA_MAX = -8


def _two_malloc_arenas() -> None:
    """Let the watcher's threads share one malloc arena beside the event loop's, not one each.

    glibc gives each thread that allocates an arena of its own, up to 8 per core, and each keeps its high
    water mark: the watcher's database and Redis threads (asyncio.to_thread, the sync trigger) held 9.8 MB
    in 5 arenas at 1,000 inboxes under load, and capping them at two took 3 MB off its RSS with the
    watches idle (bench/README.md, live section). Two, not one: the event loop's TLS work keeps the main
    arena to itself. Called before any thread starts; a no-op outside glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None and not mallopt(M_ARENA_MAX, 2):
        logging.getLogger(__name__).warning("could not cap malloc arenas")
