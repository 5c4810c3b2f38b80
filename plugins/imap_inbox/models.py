"""Tables owned by imap_inbox: connected inboxes, their folders, message metadata and addresses.

Only metadata is stored (headers, flags, size, dates, an optional short
preview), never bodies. Addresses are kept normalized (lower case) in their
own table so that timelines, the contacts import and the reply condition are
plain set-based joins on ``imap_message_address.email``.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from host_app.api import UTCDateTime
from host_app.extensions import db
from host_app.models import Agent, utcnow

# Inbox.status values
NEW = "new"
QUEUED = "queued"
SYNCING = "syncing"
OK = "ok"
NEEDS_ATTENTION = "needs_attention"  # credentials or settings must change; no automatic retries
ERROR = "error"  # transient (server down, timeout); retried with backoff
DISABLED = "disabled"

# Folder.role values
ROLE_INBOX = "inbox"
ROLE_SENT = "sent"
ROLE_OTHER = "other"

# MessageAddress.role values naming the people a message was addressed to. "bcc" rows exist only on
# outgoing messages: the Sent copy keeps the Bcc header, while one left on incoming mail by some servers
# says nothing about whom we wrote to.
RECIPIENT_ROLES = ("to", "cc", "bcc")


class Inbox(db.Model):
    """A team mailbox connected over IMAP. The password is stored encrypted (see crypto.py)."""

    __tablename__ = "imap_inbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # for admins only; agents never see it
    email: Mapped[str] = mapped_column(String(320), index=True)  # the mailbox's own address, normalized
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=993)
    security: Mapped[str] = mapped_column(String(10), default="ssl")  # "ssl" (implicit TLS) or "starttls"
    username: Mapped[str] = mapped_column(String(320))
    password_encrypted: Mapped[bytes] = mapped_column(db.LargeBinary)
    ca_file: Mapped[str | None] = mapped_column(String(1000))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id", ondelete="SET NULL"), index=True)
    create_users: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    extra_folders: Mapped[list] = mapped_column(JSON, default=list)  # more folders chosen by the admin

    status: Mapped[str] = mapped_column(String(20), default=NEW)
    error: Mapped[str | None] = mapped_column(Text)  # plain words, shown to admins and the owner
    error_hint: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive transient failures (backoff)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    # "Read the mailbox again" was asked for: the next sync forgets the stored mail first (service.request_resync).
    resync_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    owner: Mapped[Agent | None] = relationship()
    folders: Mapped[list[Folder]] = relationship(
        back_populates="inbox", cascade="all, delete-orphan", passive_deletes=True, order_by="Folder.id"
    )


class Folder(db.Model):
    """One synced IMAP folder with its sync checkpoint."""

    __tablename__ = "imap_folder"
    __table_args__ = (
        UniqueConstraint("inbox_id", "name", name="uq_imap_folder_inbox_name"),
        # What a message's (folder_id, inbox_id) foreign key points at.
        UniqueConstraint("id", "inbox_id", name="uq_imap_folder_id_inbox_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("imap_inbox.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1000))
    role: Mapped[str] = mapped_column(String(10), default=ROLE_OTHER)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)  # UIDNEXT seen at the last completed sync
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    # Initial sync walks newest-first: every UID >= low_uid is stored. Resuming continues below it.
    low_uid: Mapped[int | None] = mapped_column(BigInteger)
    high_uid: Mapped[int] = mapped_column(BigInteger, default=0)  # highest UID stored
    # After "inboxes resync": new mail up to this UID was announced (email_received/sent) before the stored
    # mail was forgotten, so reading it again announces nothing. Cleared when UIDVALIDITY changes.
    announced_uid: Mapped[int | None] = mapped_column(BigInteger)
    initial_done: Mapped[bool] = mapped_column(Boolean, default=False)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # {uid: syncs in which the server hung up when asked for that message}; at 3 it is stored as unreadable.
    unreadable: Mapped[dict | None] = mapped_column(JSON)

    inbox: Mapped[Inbox] = relationship(back_populates="folders")

    def restart_initial_sync(self) -> None:
        """Forget the checkpoint: the next sync reads the whole folder as the first time."""
        self.initial_done = False
        self.low_uid = self.uidnext = self.highestmodseq = None
        self.high_uid = 0


class Message(db.Model):
    """Metadata of one message in one folder (the same e-mail in two places is two rows, one dedup_key)."""

    __tablename__ = "imap_message"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_imap_message_folder_uid"),
        Index("ix_imap_message_inbox_date", "inbox_id", "date"),
        # One foreign key for both columns: the message's inbox is its folder's (and deleting either deletes
        # the message). Each foreign key is a check per inserted row; one instead of two saved a third of
        # the insert time of 110k messages on PostgreSQL (bench/README.md).
        ForeignKeyConstraint(["folder_id", "inbox_id"], ["imap_folder.id", "imap_folder.inbox_id"],
                             ondelete="CASCADE", name="fk_imap_message_folder_id_inbox_id_imap_folder"),
        # Ids only grow, even after the newest messages are deleted: other plugins keep their place with
        # "the last id I have seen" (reply_condition, contacts_import). SQLite would hand the highest id out
        # again without AUTOINCREMENT; PostgreSQL's sequences never do.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(Integer)
    # No index of its own: the unique (folder_id, uid) index serves every folder_id lookup.
    folder_id: Mapped[int] = mapped_column(Integer)
    uid: Mapped[int] = mapped_column(BigInteger)
    # Not indexed: every B-tree on a long random string costs each insert of a large first sync
    # (bench/README.md). Look a Message-ID up by dedup_key, which equals it whenever there is one.
    message_id: Mapped[str | None] = mapped_column(String(998))  # without <>, as sent
    dedup_key: Mapped[str] = mapped_column(String(998), index=True)  # message_id, or a hash when missing
    direction: Mapped[str] = mapped_column(String(3))  # "in" or "out"
    subject: Mapped[str] = mapped_column(Text, default="")  # decoded
    from_email: Mapped[str | None] = mapped_column(String(320))  # lookups by address use imap_message_address
    from_name: Mapped[str] = mapped_column(String(300), default="")
    date: Mapped[datetime] = mapped_column(UTCDateTime())  # Date header, or INTERNALDATE
    internal_date: Mapped[datetime | None] = mapped_column(UTCDateTime())
    size: Mapped[int] = mapped_column(Integer, default=0)
    flags: Mapped[str] = mapped_column(String(500), default="")
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[str | None] = mapped_column(Text)  # space-separated Message-IDs without <>
    auto_submitted: Mapped[str | None] = mapped_column(String(100))
    precedence: Mapped[str | None] = mapped_column(String(50))
    list_id: Mapped[str | None] = mapped_column(String(500))
    list_unsubscribe: Mapped[bool] = mapped_column(Boolean, default=False)
    x_autoreply: Mapped[bool] = mapped_column(Boolean, default=False)
    content_type: Mapped[str | None] = mapped_column(String(200))
    # Bulk or machine-sent: list headers, Precedence bulk/list/junk/auto_reply, Auto-Submitted, X-Autoreply,
    # delivery reports. Computed once at sync time so other plugins filter with one column.
    automated: Mapped[bool] = mapped_column(Boolean, default=False)
    preview: Mapped[str | None] = mapped_column(Text)
    parse_error: Mapped[str | None] = mapped_column(Text)  # what could not be read; the rest is stored
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    addresses: Mapped[list[MessageAddress]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class MessageAddress(db.Model):
    """One address of a message (From, To, Cc, Reply-To, Bcc), normalized: the join key to contacts."""

    __tablename__ = "imap_message_address"
    # (email, role, date): a contact's timeline is a backwards range scan that stops after one page.
    __table_args__ = (Index("ix_imap_message_address_email_role_date", "email", "role", "date"),)

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("imap_message.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(10), primary_key=True)  # from | to | cc | reply_to | bcc
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    # Copied from the message for cheap filters. Not indexed: one value per inbox, and the index cost every
    # insert of a first sync (bench/README.md); an inbox's rows are found through its messages.
    inbox_id: Mapped[int] = mapped_column(Integer)
    date: Mapped[datetime | None] = mapped_column(UTCDateTime())  # copied from the message (keyset paging)


class SyncRun(db.Model):
    """One sync of one inbox: when, what it did, how it ended (inbox health history)."""

    __tablename__ = "imap_sync_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("imap_inbox.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | ok | failed
    new_messages: Mapped[int] = mapped_column(Integer, default=0)
    removed_messages: Mapped[int] = mapped_column(Integer, default=0)
    flagged_messages: Mapped[int] = mapped_column(Integer, default=0)
    updated_messages: Mapped[int] = mapped_column(Integer, default=0)  # flag changes, UIDs re-matched
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON)  # per-folder counts of this run
