"""The matching after a sync: a follow-up job of the run (``plugins.mail.followups``), enqueued from the hook.

It waits for the jobs of the same run that prepare (contacts_import's import), so a reply from someone
that run made a contact is announced with that contact and its automations run for them. It matches only
the messages its run had stored when the hook ran (``upto``): a later run's messages wait for that run's
import and matching, even when this job runs after that run stored them.

Two quick syncs of one inbox make two jobs, possibly running at once on two workers. That is safe: the
matcher's batches take turns (an advisory lock on PostgreSQL, SQLite's single writer) and each reads the
inbox's cursor inside its own turn, so the second job only sees what the first left; a response is stored
once (its pair is unique) and handed back only to the job that stored it, and a reply that answered
something before is not announced again (``NewResponse.reply_seen_before``). So no reply is announced twice.
"""
from __future__ import annotations

import logging
from typing import Any

from host_app.api import app_job
from plugins.mail.followups import enqueue_follow_up, newest_message_id

from .matcher import match_batches, nothing_to_match
from .replied import announce

log = logging.getLogger(__name__)


def on_mailbox_synced(inbox_id: int, run_id: int, new_messages: int, removed_messages: int) -> bool:
    """Enqueue the matching of what the sync run brought; True when enqueued."""
    # Most syncs bring nothing: two small queries here spare the queue a job that would find nothing.
    if new_messages == 0 and removed_messages == 0 and nothing_to_match(inbox_id):
        return False
    return enqueue_follow_up(match_after_sync, inbox_id, run_id, newest_message_id(inbox_id),
                             description=f"reply matching of inbox {inbox_id} after sync run {run_id}") is not None


@app_job
def match_after_sync(inbox_id: int, run_id: int, upto: int | None = None) -> dict[str, Any]:
    """RQ job: store the responses among the inbox's new messages (ids up to ``upto``) and announce them."""
    stored = announced = 0
    try:
        # Announced batch by batch: a first sync's backlog is never held in memory at once.
        for found in match_batches(inbox_id, upto):
            stored += len(found)
            announced += announce(found, sync_run_id=run_id)
    except Exception as exc:
        # The traceback goes to RQ's failed job; the log gets one line (ids and the error's kind).
        log.error("reply matching of inbox %s after sync run %s failed: %s", inbox_id, run_id,
                  exc.__class__.__name__)
        raise
    return {"inbox_id": inbox_id, "run_id": run_id, "responses": stored, "announced": announced}
