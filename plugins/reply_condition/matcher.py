"""Finds responses among newly synced messages and stores them in ``reply_condition_response``.

Runs after every sync of an inbox (the ``inbox_synced`` event) on the messages
the inbox gained since the last run, in both directions, because INBOX and Sent
sync in either order and replies arrive in any connected inbox:

* a new possible reply is matched against all our e-mails;
* a new e-mail of ours is matched against all possible replies already seen.

Each direction is one set-based query per batch, joined on indexes: the
Message-IDs a reply names (``reply_condition_reference``), the hashed
normalized subjects (``reply_condition_subject``) and the recipients of our
e-mail (``imap_message_address``).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from host_app.extensions import db
from plugins.imap_inbox.models import Folder, Inbox, Message, MessageAddress

from .models import BY_HEADER, BY_SUBJECT, OURS, REPLY, Cursor, ReplyReference, Response, SubjectKey
from .subjects import reply_subject_key, subject_key

log = logging.getLogger(__name__)

BATCH_SIZE = 2000  # messages per transaction: a first sync of a large mailbox commits as it goes
STATISTICS_EVERY = 10  # batches between two ANALYZE while a large backlog is matched (PostgreSQL)
MAX_REFERENCES = 200  # the newest Message-IDs of References kept per reply (threads rarely go deeper)
MAX_REF_LENGTH = 998  # RFC 5322 line limit; longer "ids" are garbage and would not fit the index
RECIPIENT_ROLES = ("to", "cc")
AUTOMATIC_PRECEDENCE = {"auto_reply", "bulk", "junk"}
# An arbitrary constant naming this plugin's PostgreSQL advisory lock.
_LOCK_KEY = 0x5265706C79  # "Reply"
_MESSAGE_ID = re.compile(r"<?\s*([^<>\s]+)\s*>?")


@dataclasses.dataclass(frozen=True)
class NewResponse:
    """A response stored by this run (what the ``contact_replied`` event is made of)."""

    reply_pk: int
    our_pk: int
    contact_email: str
    reply_key: str  # the reply's dedup key (its Message-ID, or a hash when it has none)
    reply_inbox_id: int
    our_inbox_id: int
    replied_at: datetime
    matched_by: str


def is_automatic(
    auto_submitted: str | None,
    precedence: str | None,
    x_autoreply: bool | None,
    content_type: str | None,
    from_email: str | None,
) -> bool:
    """Whether a message was sent by a machine, so it is never a response.

    Auto-Submitted other than "no", X-Autoreply/X-Autorespond, Precedence
    auto_reply/bulk/junk, delivery reports (multipart/report, mailer-daemon).
    """
    if auto_submitted and auto_submitted.strip().lower() not in ("", "no"):
        return True
    if x_autoreply:
        return True
    if precedence and precedence.strip().lower() in AUTOMATIC_PRECEDENCE:
        return True
    if content_type and content_type.strip().lower().startswith("multipart/report"):
        return True
    local_part = (from_email or "").partition("@")[0].lower()
    return local_part == "mailer-daemon"


def referenced_ids(in_reply_to: str | None, references: str | None) -> list[str]:
    """The Message-IDs a message names, In-Reply-To first, without <> and duplicates."""
    found: list[str] = []
    refs = _MESSAGE_ID.findall(references or "")[-MAX_REFERENCES:]
    for value in _MESSAGE_ID.findall(in_reply_to or "")[:1] + refs[::-1]:
        if len(value) <= MAX_REF_LENGTH and value.isascii() and value not in found:
            found.append(value)
    return found


def as_utc(value: datetime) -> datetime:
    """Dates come back naive from SQLite: they were stored in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------------- running


def process_inbox(inbox_id: int) -> list[NewResponse]:
    """Match every message the inbox gained since the last run; return the responses stored.

    Commits once per batch. Safe to run concurrently for several inboxes: the
    runs take turns (a lock on PostgreSQL, SQLite's single writer), so a reply
    and our e-mail synced at the same moment by two inboxes still meet.
    """
    # The sync committed before emitting its event; end any read transaction so we see everything.
    db.session.commit()
    found: list[NewResponse] = []
    known: set[tuple[int, int]] = set()  # pairs stored before a rematch: not new
    for batch_number in itertools.count():
        try:
            if batch_number % STATISTICS_EVERY == 0:
                _refresh_statistics_if_stale(inbox_id)
            batch, more, forgotten = _process_batch(inbox_id)
        except Exception:
            db.session.rollback()
            raise
        known |= forgotten
        found += batch
        if not more:
            return [r for r in found if (r.reply_pk, r.our_pk) not in known]


def rebuild() -> int:
    """Forget every stored response and match all messages of every inbox again; return the count."""
    for model in (Response, ReplyReference, SubjectKey, Cursor):
        db.session.execute(sa.delete(model))
    db.session.commit()
    for inbox_id in db.session.scalars(sa.select(Inbox.id).order_by(Inbox.id)).all():
        process_inbox(inbox_id)
    return db.session.scalar(sa.select(sa.func.count()).select_from(Response)) or 0


def _process_batch(inbox_id: int) -> tuple[list[NewResponse], bool, set[tuple[int, int]]]:
    """Match the next batch of the inbox's messages; return (stored, more to do, pairs forgotten by a rematch)."""
    _take_turns()
    if db.session.get(Inbox, inbox_id) is None:
        return [], False, set()
    last = _cursor_position(inbox_id)
    forgotten = _rematch_if_roles_changed(inbox_id)
    if forgotten is not None:
        last = 0
    rows = db.session.execute(
        sa.select(
            Message.id,
            Message.direction,
            Message.subject,
            Message.from_email,
            Message.in_reply_to,
            Message.references,
            Message.auto_submitted,
            Message.precedence,
            Message.x_autoreply,
            Message.content_type,
        )
        .where(Message.inbox_id == inbox_id, Message.id > last)
        .order_by(Message.id)
        .limit(BATCH_SIZE)
    ).all()
    if not rows:
        db.session.commit()
        return [], False, forgotten or set()
    _index_messages(rows)
    ids = [row.id for row in rows]
    stored = _store(_candidate_pairs(ids))
    db.session.execute(
        sa.update(Cursor)
        .where(Cursor.inbox_id == inbox_id)
        .values(last_message_pk=ids[-1], updated_at=datetime.now(UTC))
    )
    db.session.commit()
    return stored, len(rows) == BATCH_SIZE, forgotten or set()


def _refresh_statistics_if_stale(inbox_id: int) -> None:
    """ANALYZE the tables the matcher joins when a large backlog waits (PostgreSQL).

    Right after a first sync of a big mailbox, the planner's statistics still
    describe near-empty tables, and its plans for the joins degrade from
    milliseconds to seconds per batch. Autovacuum catches up only later.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    last = db.session.scalar(sa.select(Cursor.last_message_pk).where(Cursor.inbox_id == inbox_id)) or 0
    pending = sa.select(Message.id).where(Message.inbox_id == inbox_id, Message.id > last).limit(BATCH_SIZE)
    if db.session.scalar(sa.select(sa.func.count()).select_from(pending.subquery())) < BATCH_SIZE:
        db.session.commit()
        return
    tables = [Message.__table__, MessageAddress.__table__, ReplyReference.__table__, SubjectKey.__table__,
              Response.__table__]
    db.session.execute(sa.text("ANALYZE " + ", ".join(f'"{table.name}"' for table in tables)))
    db.session.commit()


def _take_turns() -> None:
    """Serialize runs: one transaction at a time looks for responses."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _cursor_position(inbox_id: int) -> int:
    # A write first: on SQLite it takes the database's write lock for the whole batch.
    db.session.execute(_insert(Cursor).values(inbox_id=inbox_id, last_message_pk=0).on_conflict_do_nothing())
    return db.session.scalar(sa.select(Cursor.last_message_pk).where(Cursor.inbox_id == inbox_id)) or 0


def _rematch_if_roles_changed(inbox_id: int) -> set[tuple[int, int]] | None:
    """Start the inbox over when a folder changed role (the sync then rewrote message directions).

    Returns the (reply, ours) pairs forgotten, so finding them again is not news,
    or ``None`` when nothing changed.
    """
    roles = {str(folder_id): role for folder_id, role in
             db.session.execute(sa.select(Folder.id, Folder.role).where(Folder.inbox_id == inbox_id))}
    before = db.session.scalar(sa.select(Cursor.folder_roles).where(Cursor.inbox_id == inbox_id))
    if before != roles:
        db.session.execute(sa.update(Cursor).where(Cursor.inbox_id == inbox_id).values(folder_roles=roles))
    if before is None or all(before.get(folder_id, role) == role for folder_id, role in roles.items()):
        return None
    log.info("inbox %s: a folder changed role; matching its messages again", inbox_id)
    inbox_messages = sa.select(Message.id).where(Message.inbox_id == inbox_id)
    involved = sa.or_(Response.reply_pk.in_(inbox_messages), Response.our_pk.in_(inbox_messages))
    pairs = db.session.execute(sa.select(Response.reply_pk, Response.our_pk).where(involved))
    forgotten = {(reply_pk, our_pk) for reply_pk, our_pk in pairs}
    db.session.execute(sa.delete(Response).where(involved))
    db.session.execute(sa.delete(ReplyReference).where(ReplyReference.message_pk.in_(inbox_messages)))
    db.session.execute(sa.delete(SubjectKey).where(SubjectKey.message_pk.in_(inbox_messages)))
    return forgotten


def _insert(model):
    """INSERT ... ON CONFLICT for the database in use (Core, not ORM: rows are plain dicts, inserted in bulk)."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__)


def _index_messages(rows: Sequence) -> None:
    """Store the subject keys of our e-mails, and the Message-IDs and subject keys of possible replies."""
    references: list[dict] = []
    subjects: list[dict] = []
    for row in rows:
        if row.direction == "out":
            key = subject_key(row.subject)
            if key:
                subjects.append({"message_pk": row.id, "side": OURS, "subject_key": key})
            continue
        if row.direction != "in" or not row.from_email:
            continue
        if is_automatic(row.auto_submitted, row.precedence, row.x_autoreply, row.content_type, row.from_email):
            continue
        ref_ids = referenced_ids(row.in_reply_to, row.references)
        references += [{"message_pk": row.id, "ref_id": ref} for ref in ref_ids]
        if not (row.in_reply_to or "").strip() and not (row.references or "").strip():
            key = reply_subject_key(row.subject)
            if key:
                subjects.append({"message_pk": row.id, "side": REPLY, "subject_key": key})
    if references:
        db.session.execute(_insert(ReplyReference).on_conflict_do_nothing(), references)
    if subjects:
        db.session.execute(_insert(SubjectKey).on_conflict_do_nothing(), subjects)


def _candidate_pairs(ids: list[int]) -> dict[tuple[int, int], tuple]:
    """(reply, ours) pairs where the reply or our e-mail is among ``ids``, with what a Response needs.

    Each query starts from the batch (primary keys) and follows one index per
    step: the reply's references or subject key, then our e-mail. Whether our
    e-mail was addressed to the replying contact is a correlated EXISTS on the
    address table's primary key, so no plan ever walks a contact's whole history.
    """
    reply, ours, address = aliased(Message), aliased(Message), aliased(MessageAddress)
    columns = (
        reply.id.label("reply_pk"),
        ours.id.label("our_pk"),
        reply.from_email,
        reply.dedup_key,
        reply.inbox_id.label("reply_inbox_id"),
        reply.date.label("replied_at"),
        ours.inbox_id.label("our_inbox_id"),
        ours.date.label("sent_at"),
    )
    addressed_to_sender = (
        sa.select(address.message_pk)
        .where(address.message_pk == ours.id, address.role.in_(RECIPIENT_ROLES), address.email == reply.from_email)
        .exists()
    )
    by_header = (
        sa.select(*columns)
        .select_from(ReplyReference)
        .join(reply, reply.id == ReplyReference.message_pk)
        .join(ours, sa.and_(ours.message_id == ReplyReference.ref_id, ours.direction == "out"))
        .where(addressed_to_sender)
    )
    reply_subject, our_subject = aliased(SubjectKey), aliased(SubjectKey)
    by_subject = (
        sa.select(*columns)
        .select_from(reply_subject)
        .join(our_subject, sa.and_(our_subject.subject_key == reply_subject.subject_key, our_subject.side == OURS))
        .join(reply, reply.id == reply_subject.message_pk)
        .join(ours, ours.id == our_subject.message_pk)
        .where(reply_subject.side == REPLY, addressed_to_sender)
    )
    pairs: dict[tuple[int, int], tuple] = {}
    for chunk in _chunks(ids, 500):
        # Two queries per kind rather than one OR, so each starts from the batch.
        queries = [
            (BY_HEADER, by_header.where(ReplyReference.message_pk.in_(chunk))),
            (BY_HEADER, by_header.where(ours.id.in_(chunk))),
            (BY_SUBJECT, by_subject.where(reply_subject.message_pk.in_(chunk))),
            (BY_SUBJECT, by_subject.where(our_subject.message_pk.in_(chunk))),
        ]
        for matched_by, query in queries:
            for row in db.session.execute(query):
                if matched_by == BY_SUBJECT and not as_utc(row.sent_at) < as_utc(row.replied_at):
                    continue  # the fallback only answers an earlier e-mail of ours
                pairs.setdefault((row.reply_pk, row.our_pk), (matched_by, row))
    return pairs


def _store(pairs: dict[tuple[int, int], tuple]) -> list[NewResponse]:
    """Insert the pairs not stored yet; return those this call inserted."""
    if not pairs:
        return []
    values = []
    for (reply_pk, our_pk), (matched_by, row) in pairs.items():
        sent_at, replied_at = as_utc(row.sent_at), as_utc(row.replied_at)
        values.append(
            {
                "reply_pk": reply_pk,
                "our_pk": our_pk,
                "contact_email": row.from_email,
                "our_inbox_id": row.our_inbox_id,
                "sent_at": sent_at,
                "replied_at": replied_at,
                "delay_seconds": int((replied_at - sent_at).total_seconds()),
                "matched_by": matched_by,
                "created_at": datetime.now(UTC),
            }
        )
    table = Response.__table__
    inserted = db.session.execute(
        _insert(Response).on_conflict_do_nothing().returning(table.c.reply_pk, table.c.our_pk), values
    ).all()
    result = []
    for reply_pk, our_pk in inserted:
        matched_by, row = pairs[(reply_pk, our_pk)]
        result.append(
            NewResponse(
                reply_pk=reply_pk,
                our_pk=our_pk,
                contact_email=row.from_email,
                reply_key=row.dedup_key,
                reply_inbox_id=row.reply_inbox_id,
                our_inbox_id=row.our_inbox_id,
                replied_at=as_utc(row.replied_at),
                matched_by=matched_by,
            )
        )
    return result


def _chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
