"""The sync of one inbox: read-only, incremental, resumable, set-based.

Per folder (INBOX, Sent, extra folders):

1. STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ]). Nothing changed since
   the last completed sync: done, without EXAMINE or FETCH.
2. UIDVALIDITY changed: stored messages are parked under negative UIDs and
   re-matched by dedup key (Message-ID) while the folder is read again, so
   nothing is duplicated or lost; parked rows not found again are deleted.
3. EXAMINE (read-only). Flags changed since the stored HIGHESTMODSEQ are
   updated (CONDSTORE).
4. Initial sync: UID SEARCH ALL, then every UID not stored yet, newest first,
   in batches. Each batch is one FETCH of metadata (BODY.PEEK), one bulk
   insert of messages and one of addresses, and one commit with the
   checkpoint and progress; interrupted, the next run continues with what is
   not stored yet.
5. Incremental sync: UID SEARCH UID high+1:* for new mail; if the message
   count does not add up, UID SEARCH ALL finds what was expunged (deleted
   here) and any gap (fetched).

A server that hangs up while sending a batch gets a new connection and the
batch is fetched in halves until the one message it cannot send is alone;
that message is skipped (and retried next time), and stored as unreadable
only after UNREADABLE_AFTER syncs, so neither a broken message nor a flaky
link stops the sync or hides mail.

Events are emitted after each committed batch and once at the end of the run.

An inbox whose mailbox is to be read again (``ImapInbox.resync_requested``, see
``service.request_resync``) has its stored mail forgotten once the login
worked, then syncs as the first time, announcing only mail it had not
announced before.
"""
from __future__ import annotations

import imaplib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from flask import current_app
from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions
from sqlalchemy.exc import InterfaceError, OperationalError

from host_app.api import db
from plugins.mail import notify, store
from plugins.mail.models import (
    DISABLED,
    ERROR,
    NEEDS_ATTENTION,
    OK,
    RECIPIENT_ROLES,
    ROLE_SENT,
    SYNCING,
    Inbox,
    SyncRun,
)
from plugins.mail.uids import sorted_difference

from . import events
from .account import settings_for
from .connection import ImapConnectError, classify_error, close, connect
from .crypto import EncryptionKeyError
from .fetch import (
    FetchedMessage,
    FetchFailed,
    FolderState,
    PendingFetch,
    examine,
    fetch_basic,
    fetch_changed_flags,
    fetch_metadata,
    folder_status,
    has_capability,
    preview_item,
    search_uids,
    uids_above,
)
from .folders import plan_folders
from .models import ImapFolder, ImapInbox
from .rows import RowBuilder, RowContext
from .schedule import WATCHDOG, next_regular_sync, next_retry, utcnow

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
# From this many messages to fetch in one folder, rows are built in a helper process (rows.py) and SQLite
# gets a larger page cache; below it, starting the helper costs more than it saves.
DEFAULT_LARGE_SYNC_FROM = 5000
DEFAULT_SQLITE_CACHE_MB = 16  # measured at 100k: as fast as 32 MB, and the job stays under 150 MB
MAX_RECONNECTS = 30  # per run: enough to isolate a few unreadable messages, not to hammer a dying server
UNREADABLE_AFTER = 3  # syncs in which the server hung up on one message before it is stored as unreadable
# The server hung up (BYE, reset, EOF) rather than answering NO.
DROPPED = (imaplib.IMAP4.abort, imap_exceptions.IMAPClientAbortError, ConnectionError, EOFError, ssl.SSLEOFError,
           ssl.SSLZeroReturnError)
KEEP_SYNC_RUNS = 50
Progress = Callable[[int, int], None]

# Errors that mean "the conversation with the server failed", as opposed to bugs.
NETWORK_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError, FetchFailed)


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


class InboxSync:
    """Syncs the folders of one inbox over one logged-in connection."""

    def __init__(self, inbox: ImapInbox, *, on_progress: Progress | None = None, lock=None):
        config = current_app.config
        self.inbox_id = inbox.id
        self.run_id: int | None = None  # set by begin(), when there is work to do
        self.started_at = utcnow()
        self.extra_folders = list(inbox.extra_folders or [])
        self.own_addresses = {a for a in (inbox.email, inbox.username.lower()) if a and "@" in a}
        self.batch_size = max(1, int(config.get("IMAP_FETCH_BATCH", DEFAULT_BATCH)))
        self.large_from = int(config.get("IMAP_LARGE_SYNC_FROM", DEFAULT_LARGE_SYNC_FROM))
        self.sqlite_cache_mib = int(config.get("IMAP_SQLITE_CACHE_MB", DEFAULT_SQLITE_CACHE_MB))
        self.preview_mode = config.get("IMAP_PREVIEW", "server")
        self.on_progress = on_progress
        self.lock = lock
        self.reports: dict[str, FolderReport] = {}
        self.missing_folders: list[str] = []
        self.sent_found = True
        self.progress_done = 0
        self.progress_total = 0
        self.condstore = False
        self.preview = ""
        self.client: IMAPClient | None = None
        self.settings = None
        self.reconnects = 0
        self.forgotten = 0  # stored messages forgotten first, when the mailbox is read again (resync)

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

    # ------------------------------------------------------------------ run

    def open(self, settings) -> None:
        """Log in (raises ImapConnectError); the connection is this object's until close()."""
        self.settings = settings
        self.client = connect(settings)

    def close(self) -> None:
        if self.client is not None:
            close(self.client)
            self.client = None

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

    def _reconnect(self, folder: ImapFolder) -> None:
        """A new connection after the server dropped the last one, back in ``folder`` (read-only)."""
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS:
            raise imaplib.IMAP4.abort("the server kept closing the connection")
        if self.client is not None:
            try:
                self.client.shutdown()
            except Exception:  # noqa: BLE001 - it is gone already
                pass
        self.client = connect(self.settings)
        state = folder_status(self.client, folder.name, self.condstore)
        if state.uidvalidity != folder.uidvalidity:
            raise imaplib.IMAP4.abort("the folder was recreated while it was being read")
        examine(self.client, folder.name, state)

    def sync(self) -> None:
        client = self.client
        self.condstore = has_capability(client, "CONDSTORE")
        self.preview = preview_item(client, self.preview_mode)
        folders = db.session.scalars(db.select(ImapFolder).where(ImapFolder.inbox_id == self.inbox_id))
        existing = {f.name: f for f in folders}
        # STATUS before LIST: on Dovecot a STATUS that follows a LIST in the same session costs up to
        # 150 ms on a 100k folder (bench/README.md), which is most of a no-op sync.
        known_states = {name: state for name in existing if (state := self._status_if_exists(name)) is not None}
        plan = plan_folders(client, self.extra_folders)
        self.missing_folders = plan.missing
        self.sent_found = plan.sent_found
        folders = self._folder_rows(plan, existing)
        states = {folder.id: known_states.get(folder.name) or folder_status(client, folder.name, self.condstore)
                  for folder in folders}
        self.progress_total = sum(state.messages for state in states.values())
        self.progress_done = sum(folder.message_count or 0 for folder in folders)
        inbox = db.session.get(ImapInbox, self.inbox_id)
        if (inbox.progress_total, inbox.progress_done) != (self.progress_total, self.progress_done):
            self.begin()
            self._save_progress()
        for folder in folders:
            self._sync_folder(folder, states[folder.id])
        # Committed with the run's outcome.
        inbox = db.session.get(ImapInbox, self.inbox_id)
        inbox.message_count = sum(folder.message_count or 0 for folder in folders)
        inbox.progress_done = inbox.progress_total = inbox.message_count

    def _status_if_exists(self, name: str) -> FolderState | None:
        """STATUS of a folder synced before, or None when the server says it is gone (the LIST will tell)."""
        try:
            return folder_status(self.client, name, self.condstore)
        except DROPPED:
            raise
        except imaplib.IMAP4.error:  # NO: no such folder any more
            return None

    def _folder_rows(self, plan, existing: dict[str, ImapFolder]) -> list[ImapFolder]:
        """Folder rows for the plan; rows of folders no longer synced go, with their mail."""
        wanted = {choice.name: choice.role for choice in plan.folders}
        for name, folder in existing.items():
            if name not in wanted:
                self.begin()
                removed = store.delete_folder_messages(folder.id)
                db.session.delete(folder)
                self.reports[name] = report = FolderReport(name, folder.role)
                report.removed = removed
                log.info("inbox %s: folder %r is no longer synced; removed %s messages", self.inbox_id, name, removed)
        rows = []
        for choice in plan.folders:
            folder = existing.get(choice.name)
            if folder is None:
                folder = ImapFolder(inbox_id=self.inbox_id, name=choice.name, role=choice.role, high_uid=0,
                                initial_done=False, message_count=0)
                db.session.add(folder)
            elif folder.role != choice.role:
                store.set_direction(folder.id, "out" if choice.role == ROLE_SENT else None, self.own_addresses)
                folder.role = choice.role
            rows.append(folder)
        if db.session.new or db.session.deleted or db.session.dirty:
            db.session.commit()
        return rows

    def _check_alive(self) -> None:
        if self.lock is not None and getattr(self.lock, "lost", False):
            raise SyncAborted("lock_lost")
        enabled = db.session.execute(db.select(Inbox.enabled).where(Inbox.id == self.inbox_id)).scalar()
        if enabled is None:
            raise SyncAborted("deleted")
        if not enabled:
            raise SyncAborted("disabled")

    def _save_progress(self) -> None:
        db.session.execute(
            db.update(Inbox).where(Inbox.id == self.inbox_id)
            .values(progress_done=min(self.progress_done, self.progress_total), progress_total=self.progress_total)
        )
        db.session.commit()
        self._report_progress()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(self.progress_done, self.progress_total), self.progress_total)

    # ------------------------------------------------------------------ one folder

    def _sync_folder(self, folder: ImapFolder, status: FolderState) -> None:
        client = self.client
        report = self.reports.setdefault(folder.name, FolderReport(folder.name, folder.role))
        if status.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
            self.begin()
            if folder.uidvalidity is not None or store.stored_count(folder.id):
                report.uidvalidity_changed = True
                parked = store.mark_stale(folder.id)
                self.progress_done -= folder.message_count or 0
                folder.message_count = 0
                log.info("inbox %s: UIDVALIDITY of %r changed; re-matching %s stored messages",
                         self.inbox_id, folder.name, parked)
            folder.uidvalidity = status.uidvalidity
            folder.announced_uid = None  # the old UIDs named other messages
            folder.restart_initial_sync()
            db.session.commit()

        if (folder.initial_done and folder.uidnext == status.uidnext and folder.message_count == status.messages
                and (not self.condstore or folder.highestmodseq == status.highestmodseq)
                and not folder.unreadable):  # a message skipped last time is tried again
            report.unchanged = True
            folder.last_synced_at = utcnow()  # committed with the run's outcome
            return

        self.begin()
        selected = examine(client, folder.name, status)
        if self.condstore and folder.highestmodseq and selected.highestmodseq != folder.highestmodseq:
            low, high = store.uid_range(folder.id)
            if high:
                changed = fetch_changed_flags(client, low, high, folder.highestmodseq)
                report.updated += store.update_flags(folder.id, changed)
        folder.highestmodseq = selected.highestmodseq
        db.session.commit()

        if not folder.initial_done:
            self._initial(folder, report)
        else:
            self._incremental(folder, selected, report)

        folder.uidnext = selected.uidnext
        folder.message_count = store.stored_count(folder.id)
        folder.last_synced_at = utcnow()
        db.session.commit()

    def _initial(self, folder: ImapFolder, report: FolderReport) -> None:
        server_uids = search_uids(self.client, "ALL")
        stored = store.stored_uids(folder.id)
        gone = sorted_difference(stored, server_uids)
        if gone:
            report.removed += store.delete_uids(folder.id, gone)
            self.progress_done -= len(gone)
            db.session.commit()
        todo = sorted_difference(server_uids, stored)
        del stored
        todo.reverse()  # newest first
        rematching = store.has_stale(folder.id)
        self._store_all(folder, todo, report, rematching, initial=True)
        if rematching:
            report.removed += store.delete_stale(folder.id)
        folder.initial_done = True
        if server_uids:
            folder.high_uid = server_uids[-1]
            folder.low_uid = min(folder.low_uid or server_uids[0], server_uids[0])
        db.session.commit()

    def _incremental(self, folder: ImapFolder, selected: FolderState, report: FolderReport) -> None:
        client = self.client
        high = folder.high_uid or 0
        new = uids_above(client, high)
        if new:
            # A run cut short stored some new mail (newest first) without moving high_uid: not new any more.
            new = sorted(set(new) - store.existing_uids(folder.id, new))
        stored_count = store.stored_count(folder.id)
        # Skipped messages (the server hung up on them) may hide behind expunges in the count: compare then too.
        if folder.unreadable or selected.messages != stored_count + len(new):
            # Something was expunged (or a message is missing here): compare the full UID lists.
            server_uids = search_uids(client, "ALL")
            stored = store.stored_uids(folder.id)
            gone = sorted_difference(stored, server_uids)
            if gone:
                report.removed += store.delete_uids(folder.id, gone)
                self.progress_done -= len(gone)
                db.session.commit()
            new = sorted(set(sorted_difference(server_uids, stored)) | set(new))
        todo = sorted(set(new), reverse=True)
        self._store_all(folder, todo, report, False, initial=False)
        top = store.uid_range(folder.id)[1]
        if top and top > high:
            folder.high_uid = top
            db.session.commit()

    # ------------------------------------------------------------------ one batch

    def _store_all(self, folder: ImapFolder, todo: Sequence[int], report: FolderReport, rematching: bool,
                   initial: bool) -> None:
        """Fetch, build and store ``todo`` batch by batch; the rows of one batch are built while the last is stored."""
        context = RowContext(inbox_id=self.inbox_id, folder_id=folder.id, folder_role=folder.role,
                             own_addresses=frozenset(self.own_addresses), now=utcnow())
        large = len(todo) >= self.large_from
        with RowBuilder(parallel=large) as builder, store.bulk_writes(self.sqlite_cache_mib if large else 0):
            if builder.parallel:
                log.debug("inbox %s: building the rows of %r in a helper process", self.inbox_id, folder.name)
            previous = None
            for uids, fetched in self._fetch_batches(folder, todo):
                building = builder.submit(context, fetched)
                if previous is not None:
                    self._store_batch(folder, *previous, report, rematching, initial)
                previous = (uids, fetched, building)
            if previous is not None:
                self._store_batch(folder, *previous, report, rematching, initial)

    def _fetch_batches(self, folder: ImapFolder, todo: Sequence[int]):
        """Yield ``(uids, fetched)`` per batch, the next batch's FETCH already on the wire."""
        size = self.batch_size
        batches = [todo[start:start + size] for start in range(0, len(todo), size)]  # slices of an array: compact
        pending = PendingFetch(self.client, batches[0], self.preview) if batches else None
        for index, uids in enumerate(batches):
            try:
                fetched = pending.result()
            except FetchFailed as exc:
                log.warning("inbox %s: batch FETCH refused (%s); fetching one by one", self.inbox_id, exc)
                fetched = self._fetch_one_by_one(uids)
            except DROPPED:
                log.warning("inbox %s: the server dropped the connection while sending %s messages of %r; "
                            "isolating the message it cannot read", self.inbox_id, len(uids), folder.name)
                self._reconnect(folder)  # raises when the server is really gone
                fetched = self._fetch_isolating(folder, uids)
            pending = PendingFetch(self.client, batches[index + 1], self.preview) if index + 1 < len(batches) else None
            yield uids, fetched

    def _fetch_isolating(self, folder: ImapFolder, uids: list[int]) -> dict[int, FetchedMessage]:
        """Fetch ``uids`` (on a fresh connection) in halves until the message that makes the server hang up is alone.

        Some servers (Dovecot on an I/O error) answer a FETCH of one broken
        message with BYE. That message is skipped for this run and gets a
        strike; a flaky link drops random connections, so only a message
        singled out in UNREADABLE_AFTER separate syncs is stored as unreadable
        (otherwise it would stop every sync, or a bad link would hide mail).
        """
        try:
            return fetch_metadata(self.client, uids, self.preview)
        except FetchFailed:
            return self._fetch_one_by_one(uids)
        except DROPPED:
            self._reconnect(folder)
        if len(uids) > 1:
            middle = len(uids) // 2
            fetched = self._fetch_isolating(folder, uids[:middle])
            fetched.update(self._fetch_isolating(folder, uids[middle:]))
            return fetched
        uid = uids[0]
        strikes = dict(folder.unreadable or {})
        strikes[str(uid)] = strikes.get(str(uid), 0) + 1
        folder.unreadable = strikes  # a new dict: JSON columns only notice assignment
        if strikes[str(uid)] >= UNREADABLE_AFTER:
            log.warning("inbox %s: the server hung up on message UID %s of %r in %s syncs; stored as unreadable",
                        self.inbox_id, uid, folder.name, strikes[str(uid)])
            return {uid: FetchedMessage(uid=uid, complete=False)}
        log.warning("inbox %s: the server hung up on message UID %s of %r; skipped this time (%s/%s)",
                    self.inbox_id, uid, folder.name, strikes[str(uid)], UNREADABLE_AFTER)
        self.reports[folder.name].skipped.append(uid)
        return {}

    def _fetch_one_by_one(self, uids: list[int]) -> dict[int, FetchedMessage]:
        """After a refused batch: each message alone; one the server cannot read is kept with what it gives."""
        fetched: dict[int, FetchedMessage] = {}
        for uid in uids:
            try:
                fetched.update(fetch_metadata(self.client, [uid], self.preview))
            except FetchFailed:
                basic = fetch_basic(self.client, uid) or FetchedMessage(uid=uid)
                basic.complete = False
                fetched[uid] = basic
        return fetched

    def _store_batch(self, folder: ImapFolder, uids: list[int], fetched: dict[int, FetchedMessage], building,
                     report: FolderReport, rematching: bool, initial: bool) -> None:
        self._check_alive()
        already = store.existing_uids(folder.id, fetched)
        rows, address_rows = building.result()
        if already:
            kept = [i for i, row in enumerate(rows) if row["uid"] not in already]
            rows, address_rows = [rows[i] for i in kept], [address_rows[i] for i in kept]

        if rematching and rows:
            rows, address_rows = self._rematch(folder, rows, address_rows, report)

        store.insert_messages(rows, address_rows)
        if folder.unreadable:
            stored_now = {str(uid) for uid in fetched}
            if stored_now & set(folder.unreadable):
                folder.unreadable = {k: v for k, v in folder.unreadable.items() if k not in stored_now} or None
        report.new += len(rows)
        report.flagged += sum(1 for row in rows if row["parse_error"])
        self.progress_done += len(fetched) - len(already)

        low = min(uids)
        folder.low_uid = low if folder.low_uid is None else min(folder.low_uid, low)
        if initial:
            # Not in incremental syncs: they store new mail newest first, so a batch's highest UID does not
            # mean every new UID below it is stored; _incremental moves high_uid once all batches are in.
            folder.high_uid = max(folder.high_uid or 0, max(uids))
        folder.message_count = (folder.message_count or 0) + len(fetched) - len(already)
        db.session.execute(
            db.update(Inbox).where(Inbox.id == self.inbox_id)
            .values(progress_done=min(self.progress_done, self.progress_total), progress_total=self.progress_total)
        )
        folder_id, uidvalidity, announced = folder.id, folder.uidvalidity, folder.announced_uid or 0
        db.session.commit()  # the batch, its checkpoint and the progress: all or nothing

        # Mail read again after "inboxes resync" was announced the first time it was stored.
        news = [(row, addrs) for row, addrs in zip(rows, address_rows, strict=True) if row["uid"] > announced]
        if news:
            senders = [row["from_email"] for row, _ in news if row["direction"] == "in" and row["from_email"]]
            recipients = [a["email"] for row, addrs in news if row["direction"] == "out"
                          for a in addrs if a["role"] in RECIPIENT_ROLES]
            events.emit_new_mail(
                inbox_id=self.inbox_id, folder_id=folder_id,
                batch_key=f"{self.inbox_id}:{folder_id}:{uidvalidity}:{min(uids)}-{max(uids)}",
                senders=senders, recipients=recipients, initial=initial,
            )
        self._report_progress()

    def _rematch(self, folder: ImapFolder, rows, address_rows, report: FolderReport):
        """Rows whose message was stored before the UIDVALIDITY change get their new UID instead of a copy.

        Matched by dedup key (Message-ID), and among rows sharing one (broken
        mailers reuse Message-IDs) by subject, size, sender and date, so each
        UID keeps its own message's data; a different message that merely
        reuses an ID is stored anew.
        """
        parked = store.stale_by_key(folder.id, (row["dedup_key"] for row in rows))
        updates = []
        keep_rows, keep_addresses = [], []
        for row, addresses in zip(rows, address_rows, strict=True):
            candidate = _best_match(row, parked.get(row["dedup_key"]) or [])
            if candidate is not None:
                parked[row["dedup_key"]].remove(candidate)
                updates.append({"pk": candidate["id"], "new_uid": row["uid"], "new_flags": row["flags"]})
            else:
                keep_rows.append(row)
                keep_addresses.append(addresses)
        store.rematch(updates)
        report.updated += len(updates)
        return keep_rows, keep_addresses


def _best_match(row: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The parked row most likely to be ``row``'s message: same subject or size required, ties by sender and date."""
    best, best_score = None, 0
    for candidate in candidates:
        same_subject = candidate["subject"] == row["subject"]
        same_size = candidate["size"] == row["size"]
        if not (same_subject or same_size):
            continue
        score = (same_subject + same_size) * 2 + (candidate["from_email"] == row["from_email"]) \
            + (candidate["date"] == row["date"])
        if score > best_score:
            best, best_score = candidate, score
    return best


# --------------------------------------------------------------------------- the run


def _summary(inbox_id: int, status: str, syncer: InboxSync | None = None, **extra: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"inbox_id": inbox_id, "status": status,
                               "sync_run_id": syncer.run_id if syncer is not None else None}
    if syncer is not None:
        summary.update(
            new_messages=syncer.new_messages,
            removed_messages=syncer.removed_messages,
            forgotten_messages=syncer.forgotten,
            updated_messages=syncer.updated_messages,
            flagged_messages=syncer.flagged_messages,
            **syncer.details(),
        )
    summary.update(extra)
    return summary


def forget_stored_mail(inbox_id: int) -> int:
    """Delete the inbox's stored mail and sync checkpoints (the sync does this, holding the inbox's lock).

    Contacts stay; what other plugins derived from the messages goes with
    them (foreign keys) and is derived again by the sync. Each folder keeps
    its UIDVALIDITY and remembers up to which UID mail was announced, so
    email_received/email_sent do not fire again for it. Returns how many
    messages were forgotten.
    """
    inbox = db.session.get(ImapInbox, inbox_id)
    forgotten = store.delete_inbox_mail(inbox_id)
    for folder in inbox.folders:
        folder.announced_uid = max(folder.announced_uid or 0, folder.high_uid or 0) or None
        folder.restart_initial_sync()
        folder.message_count = 0
        folder.unreadable = None
    inbox.message_count = inbox.progress_done = inbox.progress_total = 0
    inbox.resync_requested = False
    db.session.commit()
    log.info("inbox %s: %s stored messages forgotten; reading the mailbox again", inbox_id, forgotten)
    return forgotten


def run_sync(inbox_id: int, *, on_progress: Progress | None = None, lock=None) -> dict[str, Any]:
    """Sync one inbox now (the caller holds its lock); returns a JSON-able summary. Never leaks the password.

    The run is recorded (SyncRun, status "syncing") once there is work to do;
    a run that finds nothing changed writes its outcome in a single commit.
    """
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return _summary(inbox_id, "not_found")
    if not inbox.enabled:
        return _summary(inbox_id, "disabled")
    started = time.monotonic()
    syncer = InboxSync(inbox, on_progress=on_progress, lock=lock)
    settings = None
    try:
        settings = settings_for(inbox)
        try:
            syncer.open(settings)
            if inbox.resync_requested:  # only once logged in: a wrong password must not cost the stored mail
                syncer.forgotten = forget_stored_mail(inbox_id)
            syncer.sync()
        finally:
            syncer.close()
    except EncryptionKeyError as exc:
        error = ImapConnectError("auth_failed", str(exc), "Enter the mailbox password again in the inbox settings.",
                                 permanent=True)
        return _failed(inbox_id, syncer, error, started)
    except ImapConnectError as exc:
        return _failed(inbox_id, syncer, exc, started)
    except SyncAborted as exc:
        return _aborted(inbox_id, syncer, exc.reason, started)
    except FetchFailed as exc:
        error = ImapConnectError("server_error", f"The server refused to read messages ({exc}).",
                                 "This is usually temporary; the sync retries automatically.")
        return _failed(inbox_id, syncer, error, started)
    except NETWORK_ERRORS as exc:
        return _failed(inbox_id, syncer, classify_error(exc, settings), started)
    except (OperationalError, InterfaceError) as exc:
        # The database went away (restart, failover, a killed backend): transient, and the
        # batch in flight was rolled back as a whole, so the next try resumes at the checkpoint.
        log.warning("inbox %s: database connection lost during the sync: %s", inbox_id, type(exc).__name__)
        db.session.rollback()
        error = ImapConnectError("server_error", "The connection to the database was lost during the sync.",
                                 "Nothing was half-written; the sync resumes where it stopped on the next try.")
        return _failed(inbox_id, syncer, error, started)
    except Exception as exc:
        db.session.rollback()
        if db.session.get(ImapInbox, inbox_id) is None:  # deleted by someone else mid-sync
            log.info("inbox %s was deleted during its sync", inbox_id)
            return _summary(inbox_id, "deleted", syncer)
        log.exception("inbox %s: sync failed unexpectedly", inbox_id)
        error = ImapConnectError("server_error", f"The sync failed unexpectedly ({type(exc).__name__}).",
                                 "This is a bug; it has been logged. The sync retries automatically.")
        _failed(inbox_id, syncer, error, started)
        raise
    return _succeeded(inbox_id, syncer, started)


def _close_interrupted_runs(inbox_id: int) -> None:
    # A run still "running" died with its process (a killed worker): we hold the lock, so none is alive.
    db.session.execute(
        db.update(SyncRun).where(SyncRun.inbox_id == inbox_id, SyncRun.status == "running")
        .values(status="failed", finished_at=utcnow(), error="Interrupted: the process running this sync stopped.")
    )


def _finish_run(syncer: InboxSync, status: str, error: str | None = None) -> int:
    """Record the run's outcome (creating its row when it never had work to do); returns its id."""
    run = db.session.get(SyncRun, syncer.run_id) if syncer.run_id is not None else None
    if run is None:
        _close_interrupted_runs(syncer.inbox_id)
        run = SyncRun(inbox_id=syncer.inbox_id, started_at=syncer.started_at)
        db.session.add(run)
    run.status = status
    run.finished_at = utcnow()
    run.error = error
    run.new_messages = syncer.new_messages
    run.removed_messages = syncer.removed_messages
    run.updated_messages = syncer.updated_messages
    run.flagged_messages = syncer.flagged_messages
    run.details = syncer.details()
    db.session.flush()
    syncer.run_id = run.id
    return run.id


def _prune_runs(inbox_id: int) -> None:
    keep = db.session.scalars(
        db.select(SyncRun.id).where(SyncRun.inbox_id == inbox_id).order_by(SyncRun.id.desc())
        .offset(KEEP_SYNC_RUNS).limit(1)
    ).first()
    if keep is not None:
        db.session.execute(db.delete(SyncRun).where(SyncRun.inbox_id == inbox_id, SyncRun.id <= keep))


def _succeeded(inbox_id: int, syncer: InboxSync, started: float) -> dict[str, Any]:
    inbox = db.session.get(ImapInbox, inbox_id)
    now = utcnow()
    inbox.status = OK if inbox.enabled else DISABLED
    inbox.error = inbox.error_hint = None
    inbox.failures = 0
    inbox.last_synced_at = now
    inbox.next_sync_at = next_regular_sync(inbox_id, now) if inbox.enabled else None
    if syncer.missing_folders:
        inbox.error = "Folders not found on the server: " + ", ".join(syncer.missing_folders)[:500]
        inbox.error_hint = "Check the folder names in the inbox settings (they are matched ignoring case)."
    run_id = _finish_run(syncer, "ok")
    _prune_runs(inbox_id)
    db.session.commit()
    notify.mailbox_synced(inbox_id=inbox_id, run_id=run_id, status="ok", new_messages=syncer.new_messages,
                          removed_messages=syncer.removed_messages)
    log.info("inbox %s synced: %s new, %s removed, %s updated in %.1fs", inbox_id, syncer.new_messages,
             syncer.removed_messages, syncer.updated_messages, time.monotonic() - started)
    return _summary(inbox_id, "ok", syncer, message_count=inbox.message_count,
                    seconds=round(time.monotonic() - started, 3))


def _failed(inbox_id: int, syncer: InboxSync, error: ImapConnectError, started: float) -> dict[str, Any]:
    db.session.rollback()  # the batch in flight, if any: nothing half-written
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return _summary(inbox_id, "deleted", syncer)
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
    run_id = _finish_run(syncer, "failed", error.message)
    _prune_runs(inbox_id)
    db.session.commit()
    log.warning("inbox %s: sync failed (%s): %s", inbox_id, error.kind, error.message)
    if syncer.new_messages or syncer.removed_messages:
        # What was committed before the failure is there for the readers to see.
        notify.mailbox_synced(inbox_id=inbox_id, run_id=run_id, status="failed", new_messages=syncer.new_messages,
                              removed_messages=syncer.removed_messages)
    return _summary(inbox_id, status, syncer, error=error.message, error_kind=error.kind,
                    hint=error.hint, retry_at=inbox.next_sync_at.isoformat() if inbox.next_sync_at else None,
                    seconds=round(time.monotonic() - started, 3))


def _aborted(inbox_id: int, syncer: InboxSync, reason: str, started: float) -> dict[str, Any]:
    db.session.rollback()
    if reason == "lock_lost":
        error = ImapConnectError("server_error", "The sync lost its lock (Redis unreachable?) and stopped.",
                                 "It resumes where it stopped on the next try.", permanent=False)
        return _failed(inbox_id, syncer, error, started)
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is not None:
        _finish_run(syncer, "failed", f"stopped: inbox {reason}")
        inbox.message_count = store.inbox_message_count(inbox_id)
        db.session.commit()
    log.info("inbox %s: sync stopped (inbox %s)", inbox_id, reason)
    return _summary(inbox_id, reason, syncer, seconds=round(time.monotonic() - started, 3))
