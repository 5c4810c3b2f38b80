"""The sync of one inbox: log in, plan its folders, sync each one, and record how the run ended.

Read-only, incremental, resumable, set-based: the folders are synced one
after the other over one logged-in connection (folder_sync.py), a run's
bookkeeping is runs.py's. Folders synced before are asked for their STATUS
before the LIST, so a run that finds nothing changed costs a login, a few
STATUS and one commit.

A server that hangs up mid-folder gets a new connection, back in that
folder, up to MAX_RECONNECTS times a run.

An inbox whose mailbox is to be read again (``ImapInbox.resync_requested``, see
``service.request_resync``) has its stored mail forgotten once the login
worked, then syncs as the first time, announcing only mail it had not
announced before.
"""
from __future__ import annotations

import imaplib
import logging
import time
from typing import Any

from flask import current_app
from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions
from sqlalchemy.exc import InterfaceError, OperationalError

from host_app.api import db
from plugins.mail import store
from plugins.mail.models import ROLE_SENT

from .account import settings_for
from .connection import DROPPED, ImapConnectError, classify_error, close, connect
from .crypto import EncryptionKeyError
from .fetch import FetchFailed, FolderState, examine, folder_status, has_capability, preview_item
from .folder_sync import (
    DEFAULT_BATCH,
    DEFAULT_COMMIT_EVERY,
    DEFAULT_LARGE_SYNC_FROM,
    DEFAULT_SQLITE_CACHE_MB,
    FolderSync,
    ReadOptions,
)
from .folders import plan_folders
from .models import ImapFolder, ImapInbox
from .response_limits import ResponseLimitExceeded
from .runs import Progress, SyncAborted, SyncRecord, aborted, failed, succeeded, summary

log = logging.getLogger(__name__)

MAX_RECONNECTS = 30  # per run: enough to isolate a few unreadable messages, not to hammer a dying server

# Errors that mean "the conversation with the server failed", as opposed to bugs.
NETWORK_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError, FetchFailed,
                  ResponseLimitExceeded)


class InboxSync:
    """Syncs the folders of one inbox over one logged-in connection."""

    def __init__(self, inbox: ImapInbox, *, on_progress: Progress | None = None, lock=None):
        config = current_app.config
        self.inbox_id = inbox.id
        self.record = SyncRecord(inbox.id, on_progress=on_progress, lock=lock)
        self.extra_folders = list(inbox.extra_folders or [])
        self.own_addresses = frozenset(a for a in (inbox.email, inbox.username.lower()) if a and "@" in a)
        self.batch_size = max(1, int(config.get("IMAP_FETCH_BATCH", DEFAULT_BATCH)))
        self.commit_every = max(1, int(config.get("IMAP_COMMIT_EVERY", DEFAULT_COMMIT_EVERY)))
        self.large_from = int(config.get("IMAP_LARGE_SYNC_FROM", DEFAULT_LARGE_SYNC_FROM))
        self.sqlite_cache_mib = int(config.get("IMAP_SQLITE_CACHE_MB", DEFAULT_SQLITE_CACHE_MB))
        self.preview_mode = config.get("IMAP_PREVIEW", "server")
        self.condstore = False
        self.client: IMAPClient | None = None
        self.settings = None
        self.reconnects = 0

    def open(self, settings) -> None:
        """Log in (raises ImapConnectError); the connection is this object's until close()."""
        self.settings = settings
        self.client = connect(settings)

    def close(self) -> None:
        if self.client is not None:
            close(self.client)
            self.client = None

    def reconnect(self, folder: ImapFolder) -> IMAPClient:
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
        return self.client

    def sync(self) -> None:
        client, record = self.client, self.record
        self.condstore = has_capability(client, "CONDSTORE")
        options = ReadOptions(condstore=self.condstore, preview=preview_item(client, self.preview_mode),
                              own_addresses=self.own_addresses, batch_size=self.batch_size,
                              commit_every=self.commit_every, large_from=self.large_from,
                              sqlite_cache_mib=self.sqlite_cache_mib)
        folders = db.session.scalars(db.select(ImapFolder).where(ImapFolder.inbox_id == self.inbox_id))
        existing = {f.name: f for f in folders}
        # STATUS before LIST: on Dovecot a STATUS that follows a LIST in the same session costs up to
        # 150 ms on a 100k folder (bench/README.md), which is most of a no-op sync.
        known_states = {name: state for name in existing if (state := self._status_if_exists(name)) is not None}
        plan = plan_folders(client, self.extra_folders)
        record.missing_folders = plan.missing
        record.sent_found = plan.sent_found
        folders = self._folder_rows(plan, existing)
        states = {folder.id: known_states.get(folder.name) or folder_status(client, folder.name, self.condstore)
                  for folder in folders}
        record.progress_total = sum(state.messages for state in states.values())
        record.progress_done = sum(folder.message_count or 0 for folder in folders)
        inbox = db.session.get(ImapInbox, self.inbox_id)
        if (inbox.progress_total, inbox.progress_done) != (record.progress_total, record.progress_done):
            record.begin()
            record.save_progress()
        for folder in folders:
            FolderSync(folder, client=self.client, reconnect=self.reconnect, record=record,
                       options=options).run(states[folder.id])
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
                self.record.begin()
                removed = store.delete_folder_messages(folder.id)
                db.session.delete(folder)
                self.record.report_for(name, folder.role).removed = removed
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
        return summary(inbox_id, "not_found")
    if not inbox.enabled:
        return summary(inbox_id, "disabled")
    started = time.monotonic()
    syncer = InboxSync(inbox, on_progress=on_progress, lock=lock)
    record = syncer.record
    settings = None
    try:
        settings = settings_for(inbox)
        # Past this the run stops (TOO_SLOW) and the next one resumes from the checkpoint.
        settings.run_deadline = started + settings.limits.run_seconds
        try:
            syncer.open(settings)
            if inbox.resync_requested:  # only once logged in: a wrong password must not cost the stored mail
                record.forgotten = forget_stored_mail(inbox_id)
            syncer.sync()
        finally:
            syncer.close()
    except EncryptionKeyError as exc:
        error = ImapConnectError("auth_failed", str(exc), "Enter the mailbox password again in the inbox settings.",
                                 permanent=True)
        return failed(record, error, started)
    except ImapConnectError as exc:
        return failed(record, exc, started)
    except SyncAborted as exc:
        return aborted(record, exc.reason, started)
    except FetchFailed as exc:
        error = ImapConnectError("server_error", f"The server refused to read messages ({exc}).",
                                 "This is usually temporary; the sync retries automatically.")
        return failed(record, error, started)
    except NETWORK_ERRORS as exc:
        return failed(record, classify_error(exc, settings), started)
    except (OperationalError, InterfaceError) as exc:
        # The database went away (restart, failover, a killed backend): transient, and the
        # batch in flight was rolled back as a whole, so the next try resumes at the checkpoint.
        log.warning("inbox %s: database connection lost during the sync: %s", inbox_id, type(exc).__name__)
        db.session.rollback()
        error = ImapConnectError("server_error", "The connection to the database was lost during the sync.",
                                 "Nothing was half-written; the sync resumes where it stopped on the next try.")
        return failed(record, error, started)
    except Exception as exc:
        db.session.rollback()
        if db.session.get(ImapInbox, inbox_id) is None:  # deleted by someone else mid-sync
            log.info("inbox %s was deleted during its sync", inbox_id)
            return summary(inbox_id, "deleted", record)
        log.exception("inbox %s: sync failed unexpectedly", inbox_id)
        error = ImapConnectError("server_error", f"The sync failed unexpectedly ({type(exc).__name__}).",
                                 "This is a bug; it has been logged. The sync retries automatically.")
        failed(record, error, started)
        raise
    return succeeded(record, started)
