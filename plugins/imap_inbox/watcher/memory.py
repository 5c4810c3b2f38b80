"""The watcher process's malloc settings: fewer arenas, and freed memory handed back to the system.

A watcher holds a thousand connections for days, so what glibc keeps of the
memory it frees counts as much as what is in use (bench/README.md, live
section, for the measurements). Both calls are no-ops outside glibc.
"""
from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt's parameter for the most malloc arenas (malloc.h)

_libc = ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def two_malloc_arenas() -> None:
    """Let the watcher's threads share one malloc arena beside the event loop's, not one each.

    glibc gives each thread that allocates an arena of its own, up to 8 per core, and each keeps its high
    water mark: the watcher's database and Redis threads (asyncio.to_thread, the sync trigger) held 9.8 MB
    in 5 arenas at 1,000 inboxes under load, and capping them at two took 3 MB off its RSS with the
    watches idle. Two, not one: the event loop's TLS work keeps the main arena to itself. Call it before
    any thread starts.
    """
    if _libc is not None and not _libc.mallopt(M_ARENA_MAX, 2):
        log.warning("could not cap malloc arenas")


def give_back_free_memory() -> None:
    """Return the pages malloc holds free to the system (malloc_trim).

    Under load glibc keeps a few MB that the watcher freed: at 1,000 inboxes a trim in the middle of the
    load gave back 3.3 MB of 150.8, and 2.2 MB of it was held again 20 s later, so it is done every
    heartbeat rather than once. It only releases free pages (well under a millisecond); at idle it finds
    little (0.15 MB).
    """
    if _libc is not None:
        _libc.malloc_trim(0)
