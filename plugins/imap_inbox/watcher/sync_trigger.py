"""From "something changed in this inbox" to at most one queued sync, on a thread of its own.

The event loop must never wait on the database or Redis, so changes are
handed to this thread, which enqueues the inbox's usual sync job
(jobs.enqueue_sync: one job id per inbox, its per-inbox lock). A burst of
arrivals becomes one or two syncs: while a sync is queued, more changes need
nothing; while one runs (or is ending) it may already have read INBOX, so the
inbox stays pending and one more sync is enqueued when it ends. The first change of a
quiet inbox is enqueued at once; a follow-up waits until the inbox has been
quiet for ``SETTLE_SECONDS`` (at most ``MAX_DELAY_SECONDS``), so a burst
longer than one sync does not become a sync per message.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask

from host_app.api import db
from plugins.mail.models import ROLE_INBOX, ROLE_SENT

from ..jobs import enqueue_sync, mark_queued, sync_waiting
from ..models import ImapFolder

log = logging.getLogger(__name__)

RECHECK_SECONDS = 0.25  # how soon a pending inbox is looked at again
SETTLE_SECONDS = 1.0  # quiet wanted before a follow-up sync during a burst
MAX_DELAY_SECONDS = 10.0  # a change never waits longer than this for its sync to be enqueued
BURST_WINDOW_SECONDS = 10.0  # a change this soon after our last enqueue of the inbox is a follow-up
SLOW_CYCLE_SECONDS = 1.0  # an enqueueing round slower than this is logged: it delays every change behind it


class SyncTrigger:
    def __init__(self, app: Flask):
        self.app = app
        self._pending: dict[int, str] = {}  # inbox id -> why
        self._connected: dict[int, dict[str, int]] = {}  # inbox id -> EXAMINE state, to compare
        self._last_change: dict[int, float] = {}  # inbox id -> monotonic time of its latest change
        self._pending_since: dict[int, float] = {}
        self._last_enqueued: dict[int, float] = {}  # touched by the trigger thread only
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imap-watch-sync-trigger", daemon=True)
        self.enqueued = 0

    def start(self) -> SyncTrigger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def changed(self, inbox_id: int, why: str, state: dict[str, int]) -> None:
        """Thread-safe; called from the event loop."""
        now = time.monotonic()
        with self._lock:
            if why == "connected":
                self._connected[inbox_id] = state
            else:
                self._pending[inbox_id] = why
                self._last_change[inbox_id] = now
                self._pending_since.setdefault(inbox_id, now)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RECHECK_SECONDS)
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
                connected, self._connected = self._connected, {}
                last_change = {i: self._last_change.get(i, 0.0) for i in pending}
                since = {i: self._pending_since.get(i, 0.0) for i in pending}
            if not pending and not connected:
                continue
            started = time.monotonic()
            enqueued: list[int] = []
            with self.app.app_context():
                try:
                    for inbox_id, state in connected.items():
                        if inbox_id not in pending and self._missed_mail(inbox_id, state):
                            pending[inbox_id] = "catch-up"
                    now = time.monotonic()
                    still = {i: why for i, why in pending.items()
                             if self._settling(i, now, last_change.get(i, 0.0), since.get(i, now))
                             or not self._enqueue(i, why, enqueued)}
                except Exception:  # noqa: BLE001 - the database or Redis is away: try again shortly
                    log.warning("could not enqueue syncs; retrying", exc_info=True)
                    db.session.rollback()
                    still = pending
                    enqueued = []
                marking = time.monotonic()
                try:
                    # After the jobs are in Redis, so a database busy with the workers' commits delays only
                    # the "Queued" shown on the inbox list, never a sync.
                    mark_queued(enqueued)
                except Exception:  # noqa: BLE001 - cosmetic: the sync itself sets the status it ends with
                    log.warning("could not show %s inboxes as queued", len(enqueued), exc_info=True)
                    db.session.rollback()
                finally:
                    db.session.remove()
                done = time.monotonic()
                if done - started > SLOW_CYCLE_SECONDS:
                    log.warning("enqueueing %s syncs took %.1fs, %.1fs of it showing them queued in the database",
                                len(enqueued), done - started, done - marking)
            with self._lock:
                for inbox_id, why in still.items():
                    self._pending.setdefault(inbox_id, why)
                for inbox_id in pending.keys() - still.keys():
                    if inbox_id not in self._pending:
                        self._pending_since.pop(inbox_id, None)

    def _settling(self, inbox_id: int, now: float, last_change: float, since: float) -> bool:
        """Whether a follow-up sync should wait for the burst of changes to end."""
        follow_up = now - self._last_enqueued.get(inbox_id, -BURST_WINDOW_SECONDS) < BURST_WINDOW_SECONDS
        return follow_up and now - last_change < SETTLE_SECONDS and now - since < MAX_DELAY_SECONDS

    def _enqueue(self, inbox_id: int, why: str, enqueued: list[int]) -> bool:
        """True when the change is taken care of: a sync was enqueued, or one waiting in the queue will see it.

        A sync job that has started may have read INBOX before the change, also in the moment after it let go
        of the inbox's lock while RQ still shows it started: the change stays pending, and gets a sync of its
        own once that job has ended (a burst is still one or two syncs).
        """
        if enqueue_sync(inbox_id, show_queued=False):
            self._last_enqueued[inbox_id] = time.monotonic()
            self.enqueued += 1
            enqueued.append(inbox_id)
            log.info("inbox %s: sync enqueued (%s)", inbox_id, why)
            return True
        return sync_waiting(inbox_id)

    @staticmethod
    def _missed_mail(inbox_id: int, state: dict[str, Any]) -> bool:
        """Whether INBOX (or Sent, when followed) differs from what the last sync saw.

        New UIDs or a different message count; ``state`` has INBOX's "exists" and "uidnext", and the
        Sent folder's as "sent_messages" and "sent_uidnext".
        """
        folders = {folder.role: folder for folder in db.session.scalars(
            db.select(ImapFolder).where(ImapFolder.inbox_id == inbox_id,
                                        ImapFolder.role.in_((ROLE_INBOX, ROLE_SENT))))}
        inbox = folders.get(ROLE_INBOX)
        if inbox is None or not inbox.initial_done:
            return True
        if _differs(inbox, state.get("uidnext"), state.get("exists")):
            return True
        sent = folders.get(ROLE_SENT)
        return sent is not None and _differs(sent, state.get("sent_uidnext"), state.get("sent_messages"))


def _differs(folder: ImapFolder, uidnext: int | None, messages: int | None) -> bool:
    return (uidnext is not None and folder.uidnext != uidnext) or (
        messages is not None and folder.message_count != messages)
