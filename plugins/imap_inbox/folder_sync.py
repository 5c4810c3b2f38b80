"""The sync of one folder: its checkpoints, its initial and incremental reads, and storing them batch by batch.

1. STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ]), asked by the
   inbox's sync. Nothing changed since the last completed sync: done, without
   EXAMINE or FETCH.
2. UIDVALIDITY changed: stored messages are parked under negative UIDs and
   re-matched by dedup key (Message-ID) while the folder is read again, so
   nothing is duplicated or lost; parked rows not found again are deleted.
3. EXAMINE (read-only). Flags changed since the stored HIGHESTMODSEQ are
   updated (CONDSTORE).
4. Initial sync: UID SEARCH ALL, then every UID not stored yet, newest first,
   in batches. Each batch is one FETCH of metadata (BODY.PEEK), one bulk
   insert of messages and one of addresses, with the checkpoint and progress,
   committed with it or with the next few batches (see "Commits" below);
   interrupted, the next run continues with what is not stored yet.
5. Incremental sync: UID SEARCH UID high+1:* for new mail; if the message
   count does not add up, UID SEARCH ALL finds what was expunged (deleted
   here) and any gap (fetched).

A server that hangs up while sending a batch gets a new connection (from the
inbox's sync) and the batch is fetched in halves until the one message it
cannot send is alone; that message is skipped (and retried next time), and
stored as unreadable only after UNREADABLE_AFTER syncs, so neither a broken
message nor a flaky link stops the sync or hides mail.

Commits. Each commit writes out every index page its batches touched, and
the addresses' index is keyed by random e-mail addresses: a batch of 1,000
messages touches most of its pages, so committing each batch rewrote that
index about a hundred times in a first sync of 100k messages (two fifths of
the sync's CPU on SQLite, bench/README.md). So while the server's next answer
is already arriving, batches are committed in groups of up to
``commit_every`` messages and COMMIT_WITHIN_SECONDS; whenever the sync would
wait for the server, what it stored is committed first, so the database is
never held while the network is slow. A failed run loses at most the
uncommitted group, which the next run fetches again.

Events are emitted per batch, once the batch is committed.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from imapclient import IMAPClient

from host_app.api import db
from plugins.mail import store
from plugins.mail.rows import RowContext
from plugins.mail.uids import sorted_difference

from . import events
from .connection import DROPPED
from .fetch import (
    BODY_START_ITEM,
    FetchedMessage,
    FetchFailed,
    FolderState,
    PendingFetch,
    examine,
    fetch_basic,
    fetch_changed_flags,
    fetch_metadata,
    search_uids,
    uids_above,
)
from .models import ImapFolder
from .preview_fallback import fill_missing_previews, server_makes_no_previews
from .rows import RowBuilder, StoredMail, batch_of
from .runs import FolderReport, SyncRecord
from .schedule import utcnow

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
# From this many messages to fetch in one folder, rows are built in a helper process (rows.py) and SQLite
# gets a larger page cache; below it, starting the helper costs more than it saves.
DEFAULT_LARGE_SYNC_FROM = 5000
DEFAULT_SQLITE_CACHE_MB = 16  # measured at 100k: as fast as 32 MB, and the job stays under 150 MB
UNREADABLE_AFTER = 3  # syncs in which the server hung up on one message before it is stored as unreadable
DEFAULT_COMMIT_EVERY = 5000  # messages per commit at most (see "Commits"); 5,000 and 10,000 measured alike at 100k
COMMIT_WITHIN_SECONDS = 1.0  # a group is committed once its first batch is this old: other writers wait no longer

# A new connection after the server dropped the last one, back in the folder (read-only).
Reconnect = Callable[[ImapFolder], IMAPClient]


@dataclasses.dataclass(frozen=True, slots=True)
class ReadOptions:
    """What is the same for every folder of one run: the server's abilities, the inbox's addresses, the batches."""

    condstore: bool
    preview: str  # the FETCH item for previews, "" for none
    own_addresses: frozenset[str]
    batch_size: int = DEFAULT_BATCH
    commit_every: int = DEFAULT_COMMIT_EVERY
    large_from: int = DEFAULT_LARGE_SYNC_FROM
    sqlite_cache_mib: int = DEFAULT_SQLITE_CACHE_MB


class FolderSync:
    """Brings one folder's stored mail up to date with the server, over the inbox sync's connection."""

    def __init__(self, folder: ImapFolder, *, client: IMAPClient, reconnect: Reconnect, record: SyncRecord,
                 options: ReadOptions):
        self.folder = folder
        self.client = client
        self.reconnect = reconnect
        self.record = record
        self.options = options
        self.inbox_id = record.inbox_id
        self.report: FolderReport = record.report_for(folder.name, folder.role)
        # The FETCH item for previews; a server that gives no PREVIEW text is asked for the body's start instead.
        self.preview = options.preview
        self._next_fetch: PendingFetch | None = None  # the FETCH on the wire while a batch is stored
        self._uncommitted = _Uncommitted()

    def run(self, status: FolderState) -> None:
        folder, report, record = self.folder, self.report, self.record
        if status.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
            record.begin()
            if folder.uidvalidity is not None or store.stored_count(folder.id):
                report.uidvalidity_changed = True
                parked = store.mark_stale(folder.id)
                record.progress_done -= folder.message_count or 0
                folder.message_count = 0
                log.info("inbox %s: UIDVALIDITY of %r changed; re-matching %s stored messages",
                         self.inbox_id, folder.name, parked)
            folder.uidvalidity = status.uidvalidity
            folder.announced_uid = None  # the old UIDs named other messages
            folder.restart_initial_sync()
            db.session.commit()

        if (folder.initial_done and folder.uidnext == status.uidnext and folder.message_count == status.messages
                and (not self.options.condstore or folder.highestmodseq == status.highestmodseq)
                and not folder.unreadable):  # a message skipped last time is tried again
            report.unchanged = True
            folder.last_synced_at = utcnow()  # committed with the run's outcome
            return

        record.begin()
        selected = examine(self.client, folder.name, status)
        if self.options.condstore and folder.highestmodseq and selected.highestmodseq != folder.highestmodseq:
            low, high = store.uid_range(folder.id)
            if high:
                changed = fetch_changed_flags(self.client, low, high, folder.highestmodseq)
                report.updated += store.update_flags(folder.id, changed)
        folder.highestmodseq = selected.highestmodseq
        db.session.commit()

        if not folder.initial_done:
            self._initial()
        else:
            self._incremental(selected)

        folder.uidnext = selected.uidnext
        folder.message_count = store.stored_count(folder.id)
        folder.last_synced_at = utcnow()
        db.session.commit()

    def _initial(self) -> None:
        folder, report = self.folder, self.report
        server_uids = search_uids(self.client, "ALL")
        stored = store.stored_uids(folder.id)
        gone = sorted_difference(stored, server_uids)
        if gone:
            report.removed += store.delete_uids(folder.id, gone)
            self.record.progress_done -= len(gone)
            db.session.commit()
        todo = sorted_difference(server_uids, stored)
        del stored
        todo.reverse()  # newest first
        rematching = store.has_stale(folder.id)
        self._store_all(todo, rematching, initial=True)
        if rematching:
            report.removed += store.delete_stale(folder.id)
        folder.initial_done = True
        if server_uids:
            folder.high_uid = server_uids[-1]
            folder.low_uid = min(folder.low_uid or server_uids[0], server_uids[0])
        db.session.commit()

    def _incremental(self, selected: FolderState) -> None:
        folder = self.folder
        high = folder.high_uid or 0
        new = uids_above(self.client, high)
        if new:
            # A run cut short stored some new mail (newest first) without moving high_uid: not new any more.
            new = sorted(set(new) - store.existing_uids(folder.id, new))
        stored_count = store.stored_count(folder.id)
        # Skipped messages (the server hung up on them) may hide behind expunges in the count: compare then too.
        if folder.unreadable or selected.messages != stored_count + len(new):
            # Something was expunged (or a message is missing here): compare the full UID lists.
            server_uids = search_uids(self.client, "ALL")
            stored = store.stored_uids(folder.id)
            gone = sorted_difference(stored, server_uids)
            if gone:
                self.report.removed += store.delete_uids(folder.id, gone)
                self.record.progress_done -= len(gone)
                db.session.commit()
            new = sorted(set(sorted_difference(server_uids, stored)) | set(new))
        todo = sorted(set(new), reverse=True)
        self._store_all(todo, False, initial=False)
        top = store.uid_range(folder.id)[1]
        if top and top > high:
            folder.high_uid = top
            db.session.commit()

    # ------------------------------------------------------------------ batches

    def _store_all(self, todo: Sequence[int], rematching: bool, initial: bool) -> None:
        """Fetch, build and store ``todo`` batch by batch; the rows of one batch are built while the last is stored."""
        folder, options = self.folder, self.options
        context = RowContext(inbox_id=self.inbox_id, folder_id=folder.id, folder_role=folder.role,
                             own_addresses=options.own_addresses, now=utcnow())
        large = len(todo) >= options.large_from
        # Re-matching edits each batch's rows before storing them (_store_batch): they are built here.
        builder = RowBuilder(parallel=large and not rematching, dialect=db.session.get_bind().dialect.name)
        with builder, store.bulk_writes(options.sqlite_cache_mib if large else 0):
            if builder.parallel:
                log.debug("inbox %s: building the rows of %r in a helper process", self.inbox_id, folder.name)
            previous = None
            for uids, fetched in self._fetch_batches(todo):
                building = builder.submit(context, fetched)
                if previous is not None:
                    self._store_batch(*previous, rematching, initial)
                previous = (uids, fetched, building)
            if previous is not None:
                self._store_batch(*previous, rematching, initial)

    def _fetch_batches(self, todo: Sequence[int]):
        """Yield ``(uids, fetched)`` per batch, the next batch's FETCH already on the wire."""
        size = self.options.batch_size
        batches = [todo[start:start + size] for start in range(0, len(todo), size)]  # slices of an array: compact
        pending = PendingFetch(self.client, batches[0], self.preview) if batches else None
        for index, uids in enumerate(batches):
            try:
                fetched = pending.result()
            except FetchFailed as exc:
                self._commit()  # what is stored already, before the slow path
                log.warning("inbox %s: batch FETCH refused (%s); fetching one by one", self.inbox_id, exc)
                fetched = self._fetch_one_by_one(uids)
            except DROPPED:
                self._commit()
                log.warning("inbox %s: the server dropped the connection while sending %s messages of %r; "
                            "isolating the message it cannot read", self.inbox_id, len(uids), self.folder.name)
                self.client = self.reconnect(self.folder)  # raises when the server is really gone
                fetched = self._fetch_isolating(uids)
            self._fill_missing_previews(fetched)
            pending = PendingFetch(self.client, batches[index + 1], self.preview) if index + 1 < len(batches) else None
            self._next_fetch = pending
            yield uids, fetched

    def _fill_missing_previews(self, fetched: dict[int, FetchedMessage]) -> None:
        """Body text for the messages the server's PREVIEW left empty (preview_fallback.py), before the next FETCH."""
        if self.preview != "PREVIEW":
            return
        if server_makes_no_previews(fetched):
            log.info("inbox %s: the server gives no PREVIEW text; reading the start of each body instead",
                     self.inbox_id)
            self.preview = BODY_START_ITEM
        fill_missing_previews(self.client, fetched)

    def _fetch_isolating(self, uids: list[int]) -> dict[int, FetchedMessage]:
        """Fetch ``uids`` (on a fresh connection) in halves until the message that makes the server hang up is alone.

        Some servers (Dovecot on an I/O error) answer a FETCH of one broken
        message with BYE. That message is skipped for this run and gets a
        strike; a flaky link drops random connections, so only a message
        singled out in UNREADABLE_AFTER separate syncs is stored as unreadable
        (otherwise it would stop every sync, or a bad link would hide mail).
        """
        folder = self.folder
        try:
            return fetch_metadata(self.client, uids, self.preview)
        except FetchFailed:
            return self._fetch_one_by_one(uids)
        except DROPPED:
            self.client = self.reconnect(folder)
        if len(uids) > 1:
            middle = len(uids) // 2
            fetched = self._fetch_isolating(uids[:middle])
            fetched.update(self._fetch_isolating(uids[middle:]))
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
        self.report.skipped.append(uid)
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

    def _store_batch(self, uids: list[int], fetched: dict[int, FetchedMessage], building, rematching: bool,
                     initial: bool) -> None:
        folder, record = self.folder, self.record
        record.check_alive()
        already = store.existing_uids(folder.id, fetched)
        if already or rematching:  # rare: the rows themselves are needed, to leave some out or re-match them
            rows, address_rows = building.rows()
            if already:
                kept = [i for i, row in enumerate(rows) if row["uid"] not in already]
                rows, address_rows = [rows[i] for i in kept], [address_rows[i] for i in kept]
            if rematching and rows:
                rows, address_rows = self._rematch(rows, address_rows)
            batch = batch_of(rows, address_rows, db.session.get_bind().dialect.name)
        else:
            batch = building.result()
        store.insert_prepared(batch.prepared)
        if folder.unreadable:
            stored_now = {str(uid) for uid in fetched}
            if stored_now & set(folder.unreadable):
                folder.unreadable = {k: v for k, v in folder.unreadable.items() if k not in stored_now} or None
        record.progress_done += len(fetched) - len(already)

        low = min(uids)
        folder.low_uid = low if folder.low_uid is None else min(folder.low_uid, low)
        if initial:
            # Not in incremental syncs: they store new mail newest first, so a batch's highest UID does not
            # mean every new UID below it is stored; _incremental moves high_uid once all batches are in.
            folder.high_uid = max(folder.high_uid or 0, max(uids))
        folder.message_count = (folder.message_count or 0) + len(fetched) - len(already)
        record.stage_progress()
        uncommitted = self._uncommitted
        uncommitted.add(len(batch.mail), batch.parse_errors, self._new_mail(batch.mail, uids, initial))
        if self._commit_now():
            self._commit()

    def _new_mail(self, mail: list[StoredMail], uids: list[int], initial: bool) -> dict[str, Any] | None:
        """What to announce of a stored batch once it is committed (``events.emit_new_mail``'s arguments)."""
        folder = self.folder
        announced = folder.announced_uid or 0
        # Mail read again after "inboxes resync" was announced the first time it was stored.
        news = [message for message in mail if message.uid > announced]
        if not news:
            return None
        senders = [message.from_email for message in news if message.direction == "in" and message.from_email]
        recipients = [email for message in news for email in message.recipients]
        last_sent: dict = {}  # per recipient, the date of our latest e-mail to them in the batch
        for message in news:
            if message.date:
                for email in message.recipients:
                    last_sent[email] = max(message.date, last_sent.get(email, message.date))
        return {"inbox_id": self.inbox_id, "folder_id": folder.id,
                "batch_key": f"{self.inbox_id}:{folder.id}:{folder.uidvalidity}:{min(uids)}-{max(uids)}",
                "senders": senders, "recipients": recipients, "initial": initial,
                "last_sent": last_sent}

    def _commit_now(self) -> bool:
        """Commit after this batch, unless the server is already sending the next and the group is small and young."""
        uncommitted = self._uncommitted
        return (self._next_fetch is None or uncommitted.messages >= self.options.commit_every
                or uncommitted.age() >= COMMIT_WITHIN_SECONDS or not self._next_fetch.answer_arriving())

    def _commit(self) -> None:
        """Commit the stored batches with their checkpoint and progress (all or nothing), then announce them."""
        uncommitted = self._uncommitted
        if not uncommitted.batches:
            return
        db.session.commit()
        self._uncommitted = _Uncommitted()
        self.report.new += uncommitted.messages
        self.report.flagged += uncommitted.flagged
        for new_mail in uncommitted.new_mail:
            events.emit_new_mail(**new_mail)
        self.record.report_progress()

    def _rematch(self, rows, address_rows):
        """Rows whose message was stored before the UIDVALIDITY change get their new UID instead of a copy.

        Matched by dedup key (Message-ID), and among rows sharing one (broken
        mailers reuse Message-IDs) by subject, size, sender and date, so each
        UID keeps its own message's data; a different message that merely
        reuses an ID is stored anew.
        """
        parked = store.stale_by_key(self.folder.id, (row["dedup_key"] for row in rows))
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
        self.report.updated += len(updates)
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


class _Uncommitted:
    """Batches stored in the open transaction: their counts for the run's report, and what to announce."""

    def __init__(self) -> None:
        self.batches = self.messages = self.flagged = 0
        self.new_mail: list[dict[str, Any]] = []
        self.started = 0.0

    def add(self, messages: int, flagged: int, new_mail: dict[str, Any] | None) -> None:
        if not self.batches:
            self.started = time.monotonic()
        self.batches += 1
        self.messages += messages
        self.flagged += flagged
        if new_mail is not None:
            self.new_mail.append(new_mail)

    def age(self) -> float:
        return time.monotonic() - self.started if self.batches else 0.0
