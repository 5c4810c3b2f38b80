"""When imports run: right after an inbox sync (Create users on), or queued when an admin switches it on.

Both are heard through the mail core's hooks (``mailbox_synced``, ``mailbox_settings_changed``), so a
switch counts the same from the inbox's edit page or the CLI (whose transport knows nothing of this plugin).
"""
from __future__ import annotations

import logging

from redis.exceptions import RedisError

from host_app.api import app_job, db, enqueue
from plugins.mail.models import Inbox

from .importer import import_inbox, inbox_state
from .mailbox_setting import create_users_on
from .models import IDLE, QUEUED

log = logging.getLogger(__name__)

def on_mailbox_synced(inbox_id: int) -> dict | None:
    """Import the newcomers of a freshly synced inbox whose Create users option is on."""
    inbox = db.session.get(Inbox, inbox_id)
    if inbox is None or not create_users_on(inbox.id):
        return None
    return import_inbox(inbox.id)


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
    return import_inbox(inbox_id, full=full)


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
