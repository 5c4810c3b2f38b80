"""When imports run: on a job of their own after each inbox sync (Create users on), or queued when an admin
switches it on.

Both are heard through the mail core's hooks (``mailbox_synced``, ``mailbox_settings_changed``), so a
switch counts the same from the inbox's edit page or the CLI (whose transport knows nothing of this plugin).

The import after a sync is a follow-up job of the run (``plugins.mail.followups``) that *prepares*: the
other readers' jobs of the same run wait for it, so the contacts it creates are there when the replies of
that run are announced. Imports of one inbox take turns under a Redis lock: two quick syncs (or a sync and
a full import) make two jobs, and the second one starts from the watermark the first one left.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from flask import current_app
from redis.exceptions import LockError, RedisError

from host_app.api import app_job, db, enqueue, redis_connection
from plugins.mail.followups import enqueue_follow_up
from plugins.mail.models import Inbox

from .importer import import_inbox, inbox_state
from .mailbox_setting import create_users_on
from .models import IDLE, QUEUED, ImportState

log = logging.getLogger(__name__)

# An import of a whole large mailbox takes seconds; the lock outlives it by far, and a worker killed while
# holding it only delays that inbox's next import until it expires.
IMPORT_LOCK_TTL = 600
IMPORT_LOCK_WAIT = 300  # how long a second import of the inbox waits for the first before it gives up


def on_mailbox_synced(inbox_id: int, run_id: int, new_messages: int) -> bool:
    """Enqueue the import of a freshly synced inbox's newcomers when Create users is on; True when enqueued.

    Runs in the sync's job, so it only reads two rows: the import itself is :func:`import_after_sync`.
    """
    inbox = db.session.get(Inbox, inbox_id)
    if inbox is None or not create_users_on(inbox_id):
        return False
    state = db.session.get(ImportState, inbox_id)
    db.session.commit()  # end the read: the sync's worker goes on to other jobs
    # Nothing new is nothing to import, unless the watermark is gone (Create users switched on while Redis
    # was down, or never imported): then this sync's follow-up reads the whole mailbox.
    if not new_messages and state is not None and state.last_message_id is not None:
        return False
    return enqueue_follow_up(import_after_sync, inbox_id, run_id, prepares=True,
                             description=f"contacts import of inbox {inbox_id} after sync run {run_id}") is not None


@app_job
def import_after_sync(inbox_id: int, run_id: int) -> dict[str, Any] | None:
    """RQ job: import the people of the mail sync run ``run_id`` brought (None when Create users is off now)."""
    with import_lock(inbox_id):
        inbox = db.session.get(Inbox, inbox_id)
        if inbox is None or not create_users_on(inbox_id):  # deleted or switched off while the job waited
            db.session.commit()
            return None
        try:
            return import_inbox(inbox_id)
        except Exception as exc:
            # The traceback goes to RQ's failed job; the log gets one line (ids and the error's kind).
            log.error("contacts import of inbox %s after sync run %s failed: %s", inbox_id, run_id,
                      exc.__class__.__name__)
            raise


def on_mailbox_settings_changed(inbox_id: int, changed) -> bool:
    """Create users switched on: read the whole mailbox once. True when a full import was queued."""
    if "create_users" not in changed:
        return False
    inbox = db.session.get(Inbox, inbox_id)
    if inbox is None or not create_users_on(inbox.id):
        return False
    return start_full_import(inbox.id)


def start_full_import(inbox_id: int) -> bool:
    """Create users was switched on: queue an import of the whole mailbox. False when Redis refused it."""
    # People the watermark passed while it was off (or whose contacts were deleted since) count again.
    inbox_state(inbox_id).last_message_id = None
    db.session.commit()
    return queue_import(inbox_id)


@app_job
def run_import(inbox_id: int, full: bool = False) -> dict:
    """RQ job: import one inbox (``full``: the whole mailbox)."""
    with import_lock(inbox_id):
        return import_inbox(inbox_id, full=full)


@contextlib.contextmanager
def import_lock(inbox_id: int) -> Iterator[None]:
    """Imports of one inbox take turns: hold its lock while importing.

    Raises ``redis.exceptions.LockError`` after waiting ``IMPORT_LOCK_WAIT`` seconds: the job fails, and the
    next sync's import catches up. The lock only saves work and keeps the import's progress readable; the
    writes stay correct without it (insert-or-ignore, contacts announced by the import that created them).
    """
    name = f"contacts_import:{current_app.config['RQ_QUEUE']}:import-lock:{int(inbox_id)}"
    lock = redis_connection().lock(name, timeout=IMPORT_LOCK_TTL, blocking_timeout=IMPORT_LOCK_WAIT,
                                   thread_local=False)
    if not lock.acquire():
        raise LockError(f"another import of inbox {inbox_id} held its lock for {IMPORT_LOCK_WAIT} s")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("inbox %s: the import outlived its lock (%s s)", inbox_id, IMPORT_LOCK_TTL)


def queue_import(inbox_id: int, full: bool = True) -> bool:
    """Put an import on the queue and show it as queued; False when Redis cannot be reached.

    Nothing is lost then: the next sync of an inbox without a watermark reads the whole mailbox.
    """
    state = inbox_state(inbox_id)
    state.status = QUEUED  # before enqueueing: a fast worker may already mark it running
    state.progress_done = state.progress_total = 0
    db.session.commit()
    try:
        enqueue(run_import, inbox_id, full, description=f"contacts import of inbox {inbox_id}")
    except RedisError:
        log.warning("inbox %s: Redis is not reachable; the import runs after the next sync", inbox_id, exc_info=True)
        state.status = IDLE
        db.session.commit()
        return False
    return True
