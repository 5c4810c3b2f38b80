"""Tables owned by the mail core: connected inboxes, their folders, message metadata, addresses, sync runs.

Only metadata is stored (headers, flags, size, dates, an optional short
preview), never bodies. Addresses are kept normalized (lower case) in their
own table so that timelines, the contacts import and the reply condition are
plain set-based joins on ``mail_message_address.email``.

A transport extends ``Inbox`` and ``Folder`` with a table of its own (joined
table inheritance, ``transport`` naming it): ``imap_inbox`` keeps the server,
credentials and per-folder UID checkpoints there. A row whose transport
plugin is not loaded (disabled, uninstalled) loads as a plain ``Inbox`` or
``Folder``, so stored mail stays readable without its transport.
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

from host_app.api import Agent, UTCDateTime, db, utcnow

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

# Inbox.transport and Folder.transport of mail no transport syncs.
STORED = "stored"


class _StoredWhenUnknown(dict):
    """The polymorphic map of Inbox and Folder: a row of a transport whose plugin is not loaded (disabled,
    uninstalled) loads as plain stored mail instead of failing, so the readers of mail keep working."""

    def __missing__(self, transport):
        return self[STORED]


class Inbox(db.Model):
    """A connected team mailbox, whatever transport syncs it."""

    __tablename__ = "mail_inbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    transport: Mapped[str] = mapped_column(String(20))  # the plugin feeding it, e.g. "imap"
    name: Mapped[str] = mapped_column(String(200))  # for admins only; agents never see it
    email: Mapped[str] = mapped_column(String(320), index=True)  # the mailbox's own address, normalized
    # The account's login, often an address of the team too (the contacts import leaves it out).
    username: Mapped[str] = mapped_column(String(320))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id", ondelete="SET NULL"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    status: Mapped[str] = mapped_column(String(20), default=NEW)
    error: Mapped[str | None] = mapped_column(Text)  # plain words, shown to admins and the owner
    error_hint: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    owner: Mapped[Agent | None] = relationship()
    folders: Mapped[list[Folder]] = relationship(
        back_populates="inbox", cascade="all, delete-orphan", passive_deletes=True, order_by="Folder.id"
    )

    # "stored": mail kept without a transport to sync it (imported, or made by tests); transports add theirs.
    __mapper_args__ = {"polymorphic_on": "transport", "polymorphic_identity": STORED,
                       "_polymorphic_map": _StoredWhenUnknown()}


class Folder(db.Model):
    """One synced folder of an inbox, with its role (inbox, sent, other)."""

    __tablename__ = "mail_folder"
    __table_args__ = (
        UniqueConstraint("inbox_id", "name", name="uq_mail_folder_inbox_name"),
        # What a message's (folder_id, inbox_id) foreign key points at.
        UniqueConstraint("id", "inbox_id", name="uq_mail_folder_id_inbox_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    transport: Mapped[str] = mapped_column(String(20))
    inbox_id: Mapped[int] = mapped_column(ForeignKey("mail_inbox.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1000))
    role: Mapped[str] = mapped_column(String(10), default=ROLE_OTHER)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    inbox: Mapped[Inbox] = relationship(back_populates="folders")

    __mapper_args__ = {"polymorphic_on": "transport", "polymorphic_identity": STORED,
                       "_polymorphic_map": _StoredWhenUnknown()}


class Message(db.Model):
    """Metadata of one message in one folder (the same e-mail in two places is two rows, one dedup_key)."""

    __tablename__ = "mail_message"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_mail_message_folder_uid"),
        Index("ix_mail_message_inbox_date", "inbox_id", "date"),
        # One foreign key for both columns: the message's inbox is its folder's (and deleting either deletes
        # the message). Each foreign key is a check per inserted row; one instead of two saved a third of
        # the insert time of 110k messages on PostgreSQL (bench/README.md).
        ForeignKeyConstraint(["folder_id", "inbox_id"], ["mail_folder.id", "mail_folder.inbox_id"],
                             ondelete="CASCADE", name="fk_mail_message_folder_id_inbox_id_mail_folder"),
        # Ids only grow, even after the newest messages are deleted: other plugins keep their place with
        # "the last id I have seen" (reply_condition, contacts_import). SQLite would hand the highest id out
        # again without AUTOINCREMENT; PostgreSQL's sequences never do.
        # The full-text index (plugins/mail/search.py) has no model attribute: on PostgreSQL it is a generated
        # tsvector column and its GIN index, which SQLite cannot declare. Its migration makes and keeps them.
        {"sqlite_autoincrement": True,
         "info": {"database_only": ("search_vector", "ix_mail_message_search_vector")}},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(Integer)
    # No index of its own: the unique (folder_id, uid) index serves every folder_id lookup.
    folder_id: Mapped[int] = mapped_column(Integer)
    # Where the transport finds the message in its folder: the IMAP UID (a positive integer that only grows).
    uid: Mapped[int] = mapped_column(BigInteger)
    # Not indexed: every B-tree on a long random string costs each insert of a large first sync
    # (bench/README.md). Look a Message-ID up by dedup_key, which equals it whenever there is one.
    message_id: Mapped[str | None] = mapped_column(String(998))  # without <>, as sent
    dedup_key: Mapped[str] = mapped_column(String(998), index=True)  # message_id, or a hash when missing
    direction: Mapped[str] = mapped_column(String(3))  # "in" or "out"
    subject: Mapped[str] = mapped_column(Text, default="")  # decoded
    from_email: Mapped[str | None] = mapped_column(String(320))  # lookups by address use mail_message_address
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

    __tablename__ = "mail_message_address"
    # (email, role, date): a contact's timeline is a backwards range scan that stops after one page.
    __table_args__ = (Index("ix_mail_message_address_email_role_date", "email", "role", "date"),)

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(10), primary_key=True)  # from | to | cc | reply_to | bcc
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    # Copied from the message for cheap filters. Not indexed: one value per inbox, and the index cost every
    # insert of a first sync (bench/README.md); an inbox's rows are found through its messages.
    inbox_id: Mapped[int] = mapped_column(Integer)
    date: Mapped[datetime | None] = mapped_column(UTCDateTime())  # copied from the message (keyset paging)


class MessageAttachment(db.Model):
    """One attachment of a message, as its transport listed it without downloading the message (IMAP:
    BODYSTRUCTURE). ``size`` is the decoded size the user's file will have, estimated from the encoded size."""

    __tablename__ = "mail_message_attachment"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True
    )
    section: Mapped[str] = mapped_column(String(100), primary_key=True)  # IMAP section number ("2", "1.3")
    filename: Mapped[str] = mapped_column(String(300))  # decoded (RFC 2231 / 2047) and made safe
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    encoding: Mapped[str] = mapped_column(String(50), default="")  # its Content-Transfer-Encoding


class SyncRun(db.Model):
    """One sync of one inbox: when, what it did, how it ended (inbox health history)."""

    __tablename__ = "mail_sync_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("mail_inbox.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | ok | failed
    new_messages: Mapped[int] = mapped_column(Integer, default=0)
    removed_messages: Mapped[int] = mapped_column(Integer, default=0)
    flagged_messages: Mapped[int] = mapped_column(Integer, default=0)
    updated_messages: Mapped[int] = mapped_column(Integer, default=0)  # flag changes, UIDs re-matched
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON)  # per-folder counts of this run
