"""Tables owned by reply_condition: materialized responses and what the matcher needs to find them.

Every row points at ``mail_message`` rows with ``ON DELETE CASCADE``, so when a
message is expunged (or its inbox removed) the responses it took part in
vanish with it.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from host_app.api import UTCDateTime, db, utcnow

# Response.matched_by values
BY_HEADER = "header"  # In-Reply-To or References names our e-mail's Message-ID
BY_SUBJECT = "subject"  # no such headers; "Re: <our subject>"

# SubjectKey.side values
OURS = "ours"
REPLY = "reply"


class Response(db.Model):
    """A message from a contact that responds to one of our e-mails to that contact.

    One row per (reply, our e-mail) pair: a reply quoting a whole thread
    responds to each of our e-mails it names. ``delay_seconds`` is
    ``replied_at - sent_at`` so "within N days" is an indexed comparison.
    """

    __tablename__ = "reply_condition_response"
    __table_args__ = (
        UniqueConstraint("reply_pk", "our_pk", name="uq_reply_condition_response_pair"),
        Index("ix_reply_condition_response_lookup", "contact_email", "our_inbox_id", "delay_seconds"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reply_pk: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"))
    our_pk: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"), index=True)
    contact_email: Mapped[str] = mapped_column(String(320))  # the reply's From, normalized
    our_inbox_id: Mapped[int] = mapped_column(Integer)  # the inbox our e-mail was found in
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replied_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delay_seconds: Mapped[int] = mapped_column(BigInteger)
    matched_by: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReplyReference(db.Model):
    """A Message-ID named by the In-Reply-To or References of a possible reply (incoming, not automatic)."""

    __tablename__ = "reply_condition_reference"

    message_pk: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True)
    ref_id: Mapped[str] = mapped_column(String(998), primary_key=True, index=True)


class SubjectKey(db.Model):
    """The normalized subject (hashed) of one of our e-mails, or of a possible reply without thread headers."""

    __tablename__ = "reply_condition_subject"
    # subject_key first: "side" has two values, and a planner without statistics (SQLite) would
    # otherwise walk every row of one side instead of starting from the batch.
    __table_args__ = (Index("ix_reply_condition_subject_key_side", "subject_key", "side"),)

    message_pk: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True)
    side: Mapped[str] = mapped_column(String(5))  # "ours" or "reply"
    subject_key: Mapped[str] = mapped_column(String(40))


class Cursor(db.Model):
    """How far the matcher got in one inbox: every message with a higher id is still to be looked at."""

    __tablename__ = "reply_condition_cursor"

    inbox_id: Mapped[int] = mapped_column(ForeignKey("mail_inbox.id", ondelete="CASCADE"), primary_key=True)
    last_message_pk: Mapped[int] = mapped_column(BigInteger, default=0)
    # {folder id: role} when last looked at. When a folder's role changes the sync rewrites the
    # direction of its stored messages in place, so the inbox is then matched again from scratch.
    folder_roles: Mapped[dict | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
