"""The bookkeeping of one sync run: its SyncRun row, its progress, what it did per folder, and how it ended.

A run is recorded (``SyncRun``, the inbox shown as syncing) only once it
finds work to do; a run that finds nothing changed writes its outcome in a
single commit. Whatever the outcome, the inbox's status, error, next sync and
the run's row are written together, and the mail core's ``mailbox_synced``
hook hears about every run that stored or removed mail.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from host_app.api import db
from plugins.mail import notify, store
from plugins.mail.models import DISABLED, ERROR, NEEDS_ATTENTION, OK, SYNCING, Inbox, SyncRun

from .connection import ImapConnectError
from .models import ImapInbox
from .schedule import WATCHDOG, next_regular_sync, next_retry, utcnow

log = logging.getLogger(__name__)

KEEP_SYNC_RUNS = 50
Progress = Callable[[int, int], None]


class SyncAborted(Exception):
    """The sync stopped on purpose: the inbox was deleted or paused, or the lock was lost."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class FolderReport:
    """What one run did to one folder (goes into the summary and SyncRun.details)."""

    def __init__(self, name: str, role: str):
        self.name = name
        self.role = role
        self.new = 0
        self.removed = 0
        self.updated = 0
        self.flagged = 0
        self.unchanged = False
        self.uidvalidity_changed = False
        self.skipped: list[int] = []  # UIDs the server hung up on this time

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "new": self.new, "removed": self.removed, "updated": self.updated,
                "flagged": self.flagged, "unchanged": self.unchanged,
                "uidvalidity_changed": self.uidvalidity_changed, "skipped": self.skipped}


class SyncRecord:
    """One run of an inbox's sync as it goes: its row once there is work, its progress and its folder reports."""

    def __init__(self, inbox_id: int, *, on_progress: Progress | None = None, lock=None):
        self.inbox_id = inbox_id
        self.run_id: int | None = None  # set by begin(), when there is work to do
        self.started_at = utcnow()
        self.on_progress = on_progress
        self.lock = lock
        self.reports: dict[str, FolderReport] = {}
        self.missing_folders: list[str] = []
        self.sent_found = True
        self.progress_done = 0
        self.progress_total = 0
        self.forgotten = 0  # stored messages forgotten first, when the mailbox is read again (resync)

    def report_for(self, name: str, role: str) -> FolderReport:
        return self.reports.setdefault(name, FolderReport(name, role))

    # ------------------------------------------------------------------ totals

    @property
    def new_messages(self) -> int:
        return sum(r.new for r in self.reports.values())

    @property
    def removed_messages(self) -> int:
        return sum(r.removed for r in self.reports.values())

    @property
    def updated_messages(self) -> int:
        return sum(r.updated for r in self.reports.values())

    @property
    def flagged_messages(self) -> int:
        return sum(r.flagged for r in self.reports.values())

    def details(self) -> dict[str, Any]:
        return {
            "folders": {name: report.to_dict() for name, report in self.reports.items()},
            "missing_folders": self.missing_folders,
            "sent_folder_found": self.sent_found,
        }

    # ------------------------------------------------------------------ while it runs

    def begin(self) -> None:
        """There is work to do: record the run and show the inbox as syncing (once per run)."""
        if self.run_id is not None:
            return
        _close_interrupted_runs(self.inbox_id)
        run = SyncRun(inbox_id=self.inbox_id, status="running", started_at=self.started_at)
        db.session.add(run)
        db.session.execute(db.update(Inbox).where(Inbox.id == self.inbox_id).values(status=SYNCING))
        db.session.execute(
            db.update(ImapInbox).where(ImapInbox.id == self.inbox_id)
            # The watchdog: retried if this process dies without a word.
            .values(next_sync_at=utcnow() + timedelta(seconds=WATCHDOG))
        )
        db.session.commit()
        self.run_id = run.id

    def check_alive(self) -> None:
        """Raise SyncAborted when the lock was lost or the inbox deleted or paused meanwhile."""
        if self.lock is not None and getattr(self.lock, "lost", False):
            raise SyncAborted("lock_lost")
        enabled = db.session.execute(db.select(Inbox.enabled).where(Inbox.id == self.inbox_id)).scalar()
        if enabled is None:
            raise SyncAborted("deleted")
        if not enabled:
            raise SyncAborted("disabled")

    def stage_progress(self) -> None:
        """The progress, to be committed with what the caller writes next."""
        db.session.execute(
            db.update(Inbox).where(Inbox.id == self.inbox_id)
            .values(progress_done=min(self.progress_done, self.progress_total), progress_total=self.progress_total)
        )

    def save_progress(self) -> None:
        self.stage_progress()
        db.session.commit()
        self.report_progress()

    def report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(self.progress_done, self.progress_total), self.progress_total)


# --------------------------------------------------------------------------- how it ended


def summary(inbox_id: int, status: str, record: SyncRecord | None = None, **extra: Any) -> dict[str, Any]:
    """The run's JSON-able summary (what the job returns and ``inboxes sync`` prints)."""
    result: dict[str, Any] = {"inbox_id": inbox_id, "status": status,
                              "sync_run_id": record.run_id if record is not None else None}
    if record is not None:
        result.update(
            new_messages=record.new_messages,
            removed_messages=record.removed_messages,
            forgotten_messages=record.forgotten,
            updated_messages=record.updated_messages,
            flagged_messages=record.flagged_messages,
            **record.details(),
        )
    result.update(extra)
    return result


def succeeded(record: SyncRecord, started: float) -> dict[str, Any]:
    inbox_id = record.inbox_id
    inbox = db.session.get(ImapInbox, inbox_id)
    now = utcnow()
    inbox.status = OK if inbox.enabled else DISABLED
    inbox.error = inbox.error_hint = None
    inbox.failures = 0
    inbox.last_synced_at = now
    inbox.next_sync_at = next_regular_sync(inbox_id, now) if inbox.enabled else None
    if record.missing_folders:
        inbox.error = "Folders not found on the server: " + ", ".join(record.missing_folders)[:500]
        inbox.error_hint = "Check the folder names in the inbox settings (they are matched ignoring case)."
    run_id = _finish_run(record, "ok")
    _prune_runs(inbox_id)
    db.session.commit()
    notify.mailbox_synced(inbox_id=inbox_id, run_id=run_id, status="ok", new_messages=record.new_messages,
                          removed_messages=record.removed_messages)
    log.info("inbox %s synced: %s new, %s removed, %s updated in %.1fs", inbox_id, record.new_messages,
             record.removed_messages, record.updated_messages, time.monotonic() - started)
    return summary(inbox_id, "ok", record, message_count=inbox.message_count,
                   seconds=round(time.monotonic() - started, 3))


def failed(record: SyncRecord, error: ImapConnectError, started: float) -> dict[str, Any]:
    inbox_id = record.inbox_id
    db.session.rollback()  # the batch in flight, if any: nothing half-written
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return summary(inbox_id, "deleted", record)
    if error.permanent:
        inbox.status = NEEDS_ATTENTION
        inbox.next_sync_at = None  # no retries until the settings change
        status = "needs_attention"
    else:
        inbox.failures = (inbox.failures or 0) + 1
        inbox.status = ERROR
        inbox.next_sync_at = next_retry(inbox.failures)
        status = "failed"
    inbox.error = error.message
    inbox.error_hint = error.hint
    inbox.message_count = store.inbox_message_count(inbox_id)
    run_id = _finish_run(record, "failed", error.message)
    _prune_runs(inbox_id)
    db.session.commit()
    log.warning("inbox %s: sync failed (%s): %s", inbox_id, error.kind, error.message)
    if record.new_messages or record.removed_messages:
        # What was committed before the failure is there for the readers to see.
        notify.mailbox_synced(inbox_id=inbox_id, run_id=run_id, status="failed", new_messages=record.new_messages,
                              removed_messages=record.removed_messages)
    return summary(inbox_id, status, record, error=error.message, error_kind=error.kind,
                   hint=error.hint, retry_at=inbox.next_sync_at.isoformat() if inbox.next_sync_at else None,
                   seconds=round(time.monotonic() - started, 3))


def aborted(record: SyncRecord, reason: str, started: float) -> dict[str, Any]:
    inbox_id = record.inbox_id
    db.session.rollback()
    if reason == "lock_lost":
        error = ImapConnectError("server_error", "The sync lost its lock (Redis unreachable?) and stopped.",
                                 "It resumes where it stopped on the next try.", permanent=False)
        return failed(record, error, started)
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is not None:
        _finish_run(record, "failed", f"stopped: inbox {reason}")
        inbox.message_count = store.inbox_message_count(inbox_id)
        db.session.commit()
    log.info("inbox %s: sync stopped (inbox %s)", inbox_id, reason)
    return summary(inbox_id, reason, record, seconds=round(time.monotonic() - started, 3))


def _close_interrupted_runs(inbox_id: int) -> None:
    # A run still "running" died with its process (a killed worker): we hold the lock, so none is alive.
    db.session.execute(
        db.update(SyncRun).where(SyncRun.inbox_id == inbox_id, SyncRun.status == "running")
        .values(status="failed", finished_at=utcnow(), error="Interrupted: the process running this sync stopped.")
    )


def _finish_run(record: SyncRecord, status: str, error: str | None = None) -> int:
    """Record the run's outcome (creating its row when it never had work to do); returns its id."""
    run = db.session.get(SyncRun, record.run_id) if record.run_id is not None else None
    if run is None:
        _close_interrupted_runs(record.inbox_id)
        run = SyncRun(inbox_id=record.inbox_id, started_at=record.started_at)
        db.session.add(run)
    run.status = status
    run.finished_at = utcnow()
    run.error = error
    run.new_messages = record.new_messages
    run.removed_messages = record.removed_messages
    run.updated_messages = record.updated_messages
    run.flagged_messages = record.flagged_messages
    run.details = record.details()
    db.session.flush()
    record.run_id = run.id
    return run.id


def _prune_runs(inbox_id: int) -> None:
    keep = db.session.scalars(
        db.select(SyncRun.id).where(SyncRun.inbox_id == inbox_id).order_by(SyncRun.id.desc())
        .offset(KEEP_SYNC_RUNS).limit(1)
    ).first()
    if keep is not None:
        db.session.execute(db.delete(SyncRun).where(SyncRun.inbox_id == inbox_id, SyncRun.id <= keep))
