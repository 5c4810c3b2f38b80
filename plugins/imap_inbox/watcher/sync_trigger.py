"""From "something changed in this inbox" to at most one queued sync, on a thread of its own.

The event loop must never wait on the database or Redis, so changes are
handed to this thread, which enqueues the inbox's usual sync job
(jobs.enqueue_sync: one job id per inbox, its per-inbox lock). A burst of
arrivals becomes one or two syncs: while a sync is queued, more changes need
nothing; while one runs it may already have read INBOX, so the inbox stays
pending and one more sync is enqueued when it ends.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask

from host_app.api import db
from plugins.mail.models import ROLE_INBOX

from ..jobs import enqueue_sync, sync_running
from ..models import ImapFolder

log = logging.getLogger(__name__)

RECHECK_SECONDS = 0.5  # how soon an inbox whose sync is running is looked at again


class SyncTrigger:
    def __init__(self, app: Flask):
        self.app = app
        self._pending: dict[int, str] = {}  # inbox id -> why
        self._connected: dict[int, dict[str, int]] = {}  # inbox id -> EXAMINE state, to compare
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
        with self._lock:
            if why == "connected":
                self._connected[inbox_id] = state
            else:
                self._pending[inbox_id] = why
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RECHECK_SECONDS)
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
                connected, self._connected = self._connected, {}
            if not pending and not connected:
                continue
            with self.app.app_context():
                try:
                    for inbox_id, state in connected.items():
                        if inbox_id not in pending and self._missed_mail(inbox_id, state):
                            pending[inbox_id] = "catch-up"
                    still = {i: why for i, why in pending.items() if not self._enqueue(i, why)}
                except Exception:  # noqa: BLE001 - the database or Redis is away: try again shortly
                    log.warning("could not enqueue syncs; retrying", exc_info=True)
                    db.session.rollback()
                    still = pending
                finally:
                    db.session.remove()
            if still:
                with self._lock:
                    for inbox_id, why in still.items():
                        self._pending.setdefault(inbox_id, why)

    def _enqueue(self, inbox_id: int, why: str) -> bool:
        """True when the change is taken care of: a sync was enqueued, or one waiting will see it."""
        if enqueue_sync(inbox_id):
            self.enqueued += 1
            log.info("inbox %s: sync enqueued (%s)", inbox_id, why)
            return True
        return not sync_running(inbox_id)

    @staticmethod
    def _missed_mail(inbox_id: int, state: dict[str, Any]) -> bool:
        """Whether INBOX differs from what the last sync saw (new UIDs, or a different message count)."""
        folder = db.session.scalars(
            db.select(ImapFolder).where(ImapFolder.inbox_id == inbox_id, ImapFolder.role == ROLE_INBOX)).first()
        if folder is None or not folder.initial_done:
            return True
        if "uidnext" in state and folder.uidnext != state["uidnext"]:
            return True
        return "exists" in state and folder.message_count != state["exists"]
