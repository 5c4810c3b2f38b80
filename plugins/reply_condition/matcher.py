"""Finds responses among newly synced messages and stores them in ``reply_condition_response``.

Runs after every sync of an inbox (the mail core's ``mailbox_synced`` hook) on the messages
the inbox gained since the last run, in both directions, because INBOX and Sent
sync in either order and replies arrive in any connected inbox:

* a new possible reply is matched against all our e-mails;
* a new e-mail of ours is matched against all possible replies already seen.

The new messages go in batches of consecutive ids of the inbox (``last < id <=
high``), one transaction each. A batch is first indexed in Python, because that
needs parsing: the Message-IDs a reply names go to ``reply_condition_reference``,
hashed normalized subjects to ``reply_condition_subject``. Then the database
matches it: per match kind and side, one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING RETURNING`` that starts from the batch's id range and follows indexes
(a reference to our e-mail's ``dedup_key``, a subject key, the recipients of our
e-mail in ``mail_message_address``). Only the rows these inserts return, the
responses new in this batch, come back to Python; each batch's are handed on
before the next batch starts, so memory does not grow with the mailbox.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles

from host_app.api import bulk_insert_or_ignore, db, insert_or_ignore, member_of
from plugins.mail.automated import sent_by_machine
from plugins.mail.models import RECIPIENT_ROLES, Folder, Inbox, Message, MessageAddress

from .models import BY_HEADER, BY_SUBJECT, OURS, REPLY, Cursor, ReplyReference, Response, SubjectKey
from .subjects import reply_subject_key, subject_key

log = logging.getLogger(__name__)

# Messages per transaction: a first sync of a large mailbox commits as it goes. The matching
# statements cost about the same whatever the batch size, so batches are large.
BATCH_SIZE = 10000
INDEX_CHUNK = 2000  # messages read and indexed at a time within a batch (bounds the rows held in Python)
# A batch that adds at least this many rows to an index table, and a fifth of what it held, refreshes its
# planner statistics (PostgreSQL); a first sync fills these tables from nothing.
ANALYZE_MIN_ROWS = 1000
MAX_REFERENCES = 200  # the newest Message-IDs of References kept per reply (threads rarely go deeper)
MAX_REF_LENGTH = 998  # RFC 5322 line limit; longer "ids" are garbage and would not fit the index
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
    # The reply took part in a response stored before this one's batch: it was announced then.
    reply_seen_before: bool = False


def referenced_ids(in_reply_to: str | None, references: str | None) -> list[str]:
    """The Message-IDs a message names, In-Reply-To first, without <> and duplicates."""
    found: list[str] = []
    refs = _MESSAGE_ID.findall(references or "")[-MAX_REFERENCES:]
    for value in _MESSAGE_ID.findall(in_reply_to or "")[:1] + refs[::-1]:
        if len(value) <= MAX_REF_LENGTH and value.isascii() and value not in found:
            found.append(value)
    return found


# ---------------------------------------------------------------------------- running


def match_batches(inbox_id: int) -> Iterator[list[NewResponse]]:
    """Match every message the inbox gained since the last run; yield the responses each batch stored.

    Each batch is committed before its responses are yielded, so a consumer may
    act on them (emit events, run automations) between batches. Pairs a folder
    role change made us match again are not yielded again. Safe to run
    concurrently for several inboxes: the batches take turns (a lock on
    PostgreSQL, SQLite's single writer), so a reply and our e-mail synced at the
    same moment by two inboxes still meet.
    """
    # The sync committed before emitting its event; end any read transaction so we see everything.
    db.session.commit()
    _rolled_back_on_error(_refresh_statistics_if_stale, inbox_id)
    more = True
    while more:
        stored, more = _rolled_back_on_error(_process_batch, inbox_id)
        if stored:
            yield stored


def _rolled_back_on_error(function, *args):
    try:
        return function(*args)
    except Exception:
        db.session.rollback()
        raise


def process_inbox(inbox_id: int) -> list[NewResponse]:
    """All of :func:`match_batches` in one list (tests, small inboxes); the listener announces per batch."""
    return [response for batch in match_batches(inbox_id) for response in batch]


def nothing_to_match(inbox_id: int) -> bool:
    """Whether a run would find nothing: no message past the cursor and no folder changed role.

    Two small indexed queries, for the syncs that stored and removed nothing.
    A folder changing role rewrites message directions without storing or
    removing any, so roles are compared too.
    """
    rows = db.session.execute(
        sa.select(Folder.id, Folder.role, Cursor.last_message_pk, Cursor.folder_roles)
        .select_from(Folder)
        .outerjoin(Cursor, Cursor.inbox_id == Folder.inbox_id)
        .where(Folder.inbox_id == inbox_id)
    ).all()
    if not rows or rows[0].last_message_pk is None:
        return False
    if rows[0].folder_roles != {str(row.id): row.role for row in rows}:
        return False
    pending = db.session.scalar(
        sa.select(Message.id)
        .where(NotIndexed(Message.inbox_id) == inbox_id, Message.id > rows[0].last_message_pk)
        .limit(1)
    )
    db.session.commit()
    return pending is None


def rebuild() -> int:
    """Forget every stored response and match all messages of every inbox again; return the count."""
    for model in (Response, ReplyReference, SubjectKey, Cursor):
        db.session.execute(sa.delete(model))
    db.session.commit()
    for inbox_id in db.session.scalars(sa.select(Inbox.id).order_by(Inbox.id)).all():
        for _ in match_batches(inbox_id):
            pass
    return db.session.scalar(sa.select(sa.func.count()).select_from(Response)) or 0


def _process_batch(inbox_id: int) -> tuple[list[NewResponse], bool]:
    """Index and match the next batch of the inbox's messages; return (responses stored, more to do)."""
    _take_turns()
    if db.session.get(Inbox, inbox_id) is None:
        db.session.commit()
        return [], False
    last = _cursor_position(inbox_id)
    if _rematch_if_roles_changed(inbox_id):
        last = 0
    high, more, added = _index_messages(inbox_id, last)
    _refresh_index_statistics(added)
    stored = _match(inbox_id, last, high) if high > last else []
    if high > last:
        db.session.execute(
            sa.update(Cursor)
            .where(Cursor.inbox_id == inbox_id)
            .values(last_message_pk=high, updated_at=datetime.now(UTC))
        )
    db.session.commit()
    return stored, more


def _refresh_statistics_if_stale(inbox_id: int) -> None:
    """ANALYZE the message tables the matcher joins when a large backlog waits (PostgreSQL).

    Right after a first sync of a big mailbox, the planner's statistics still
    describe near-empty tables, and its plans for the joins degrade from
    milliseconds to seconds per batch. Autovacuum catches up only later.
    Once per run: matching does not change these tables.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    last = db.session.scalar(sa.select(Cursor.last_message_pk).where(Cursor.inbox_id == inbox_id)) or 0
    pending = sa.select(Message.id).where(Message.inbox_id == inbox_id, Message.id > last).limit(BATCH_SIZE)
    if db.session.scalar(sa.select(sa.func.count()).select_from(pending.subquery())) < BATCH_SIZE:
        db.session.commit()
        return
    # Only the columns the matcher's joins and filters read: the long text columns are most of the
    # cost of a full ANALYZE, and a partial one leaves autovacuum's own ANALYZE due.
    db.session.execute(sa.text(
        f'ANALYZE "{Message.__tablename__}" (id, inbox_id, direction, dedup_key, message_id),'
        f' "{MessageAddress.__tablename__}" (message_pk, role, email)'
    ))
    db.session.commit()


def _refresh_index_statistics(added: dict[str, int]) -> None:
    """ANALYZE this plugin's index tables when the batch just indexed grew them by a good part (PostgreSQL).

    Planned with the statistics of the empty tables of a first sync, the
    matching joins walk whole indexes per row (a subject match took 0.2 s
    per batch instead of 0.1 ms). Runs inside the batch's transaction:
    ANALYZE counts the rows this transaction inserted.
    """
    if db.session.get_bind().dialect.name != "postgresql" or max(added.values(), default=0) < ANALYZE_MIN_ROWS:
        return
    rows = db.session.execute(
        sa.text("SELECT relname, reltuples FROM pg_class WHERE oid IN (to_regclass(:a), to_regclass(:b))"),
        {"a": ReplyReference.__tablename__, "b": SubjectKey.__tablename__},
    )
    estimates = {name: tuples for name, tuples in rows}
    stale = [name for name, count in added.items()
             if count >= ANALYZE_MIN_ROWS and count > 0.2 * max(estimates.get(name, 0), 0)]
    if stale:
        db.session.execute(sa.text("ANALYZE " + ", ".join(f'"{name}"' for name in stale)))


def _take_turns() -> None:
    """Serialize runs: one transaction at a time looks for responses."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _cursor_position(inbox_id: int) -> int:
    # A write first: on SQLite it takes the database's write lock for the whole batch.
    db.session.execute(insert_or_ignore(Cursor.__table__).values(inbox_id=inbox_id, last_message_pk=0))
    return db.session.scalar(sa.select(Cursor.last_message_pk).where(Cursor.inbox_id == inbox_id)) or 0


def _rematch_if_roles_changed(inbox_id: int) -> bool:
    """Start the inbox over when a folder changed role (the sync then rewrote message directions).

    Only the responses the new directions rule out are deleted: those whose
    reply is no longer incoming or whose e-mail of ours no longer outgoing.
    The others are found again and, being stored already, are not news.
    """
    roles = {str(folder_id): role for folder_id, role in
             db.session.execute(sa.select(Folder.id, Folder.role).where(Folder.inbox_id == inbox_id))}
    before = db.session.scalar(sa.select(Cursor.folder_roles).where(Cursor.inbox_id == inbox_id))
    if before != roles:
        db.session.execute(sa.update(Cursor).where(Cursor.inbox_id == inbox_id).values(folder_roles=roles))
    if before is None or all(before.get(folder_id, role) == role for folder_id, role in roles.items()):
        return False
    log.info("inbox %s: a folder changed role; matching its messages again", inbox_id)
    inbox_messages = sa.select(Message.id).where(Message.inbox_id == inbox_id)
    no_longer_in = inbox_messages.where(Message.direction != "in")
    no_longer_out = inbox_messages.where(Message.direction != "out")
    db.session.execute(
        sa.delete(Response).where(sa.or_(Response.reply_pk.in_(no_longer_in), Response.our_pk.in_(no_longer_out)))
    )
    db.session.execute(sa.delete(ReplyReference).where(ReplyReference.message_pk.in_(inbox_messages)))
    db.session.execute(sa.delete(SubjectKey).where(SubjectKey.message_pk.in_(inbox_messages)))
    return True


# ---------------------------------------------------------------------------- indexing


def _index_messages(inbox_id: int, last: int) -> tuple[int, bool, dict[str, int]]:
    """Index the next batch of the inbox's messages after ``last``.

    Returns the batch's highest id, whether more messages follow, and the rows added per index table.
    """
    message = Message.__table__.c  # Core columns: rows come back as plain tuples, without the ORM's loading
    columns = (
        message.id,
        message.direction,
        message.subject,
        message.from_email,
        message.in_reply_to,
        message.references,
        message.auto_submitted,
        message.precedence,
        message.x_autoreply,
        message.content_type,
    )
    high, seen = last, 0
    added = {ReplyReference.__tablename__: 0, SubjectKey.__tablename__: 0}
    while seen < BATCH_SIZE:
        limit = min(INDEX_CHUNK, BATCH_SIZE - seen)
        rows = db.session.execute(
            sa.select(*columns)
            .where(NotIndexed(message.inbox_id) == inbox_id, message.id > high)
            .order_by(message.id)
            .limit(limit)
        ).all()
        if rows:
            references, subjects = _index_rows(rows)
            added[ReplyReference.__tablename__] += references
            added[SubjectKey.__tablename__] += subjects
            high, seen = rows[-1][0], seen + len(rows)
        if len(rows) < limit:
            return high, False, added
    return high, True, added


def _index_rows(rows: Sequence) -> tuple[int, int]:
    """Store the subject keys of our e-mails, and the Message-IDs and subject keys of possible replies.

    Returns how many references and subject keys were stored.
    """
    references: list[tuple[int, str]] = []
    subjects: list[tuple[int, str, str]] = []
    for (pk, direction, subject, from_email, in_reply_to, refs, auto_submitted, precedence, x_autoreply,
         content_type) in rows:
        if direction == "out":
            key = subject_key(subject)
            if key:
                subjects.append((pk, OURS, key))
            continue
        if direction != "in" or not from_email:
            continue
        if sent_by_machine(auto_submitted, precedence, x_autoreply, content_type, from_email):
            continue
        references += [(pk, ref) for ref in referenced_ids(in_reply_to, refs)]
        if not (in_reply_to or "").strip() and not (refs or "").strip():
            key = reply_subject_key(subject)
            if key:
                subjects.append((pk, REPLY, key))
    _store_rows(ReplyReference.__table__, ("message_pk", "ref_id"), references)
    _store_rows(SubjectKey.__table__, ("message_pk", "side", "subject_key"), subjects)
    return len(references), len(subjects)


def _store_rows(table: sa.Table, names: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT the rows, skipping those stored already."""
    bulk_insert_or_ignore(table, [dict(zip(names, row, strict=True)) for row in rows])


# ---------------------------------------------------------------------------- matching


class DelaySeconds(sa.sql.functions.FunctionElement):
    """``replied - sent`` in whole seconds, truncated toward zero like ``int(timedelta.total_seconds())``."""

    type = sa.BigInteger()
    name = "delay_seconds"
    inherit_cache = True


class SentBefore(sa.sql.functions.FunctionElement):
    """``sent < replied``, to the microsecond."""

    type = sa.Boolean()
    name = "sent_before"
    inherit_cache = True


def _sqlite_microseconds(compiler, column, **kw) -> str:
    # SQLite keeps these dates as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'. Its date functions
    # round to milliseconds, so whole seconds and microseconds are read separately, as integers.
    # The padding reads a value stored without a fraction as .000000.
    text = compiler.process(column, **kw)
    return (f"(CAST(strftime('%s', substr({text}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({text} || '000000', 21, 6) AS INTEGER))")


@compiles(DelaySeconds, "sqlite")
def _delay_seconds_sqlite(element, compiler, **kw):
    sent, replied = element.clauses
    # Integer division in SQLite truncates toward zero, as int() does.
    return (f"(({_sqlite_microseconds(compiler, replied, **kw)}"
            f" - {_sqlite_microseconds(compiler, sent, **kw)}) / 1000000)")


@compiles(DelaySeconds, "postgresql")
def _delay_seconds_postgresql(element, compiler, **kw):
    sent, replied = (compiler.process(c, **kw) for c in element.clauses)
    # EXTRACT returns an exact numeric (PostgreSQL 14+); trunc() goes toward zero.
    return f"CAST(trunc(EXTRACT(EPOCH FROM {replied} - {sent})) AS BIGINT)"


@compiles(SentBefore, "sqlite")
def _sent_before_sqlite(element, compiler, **kw):
    sent, replied = element.clauses
    return f"({_sqlite_microseconds(compiler, sent, **kw)} < {_sqlite_microseconds(compiler, replied, **kw)})"


@compiles(SentBefore, "postgresql")
def _sent_before_postgresql(element, compiler, **kw):
    sent, replied = (compiler.process(c, **kw) for c in element.clauses)
    return f"({sent} < {replied})"


class NotIndexed(sa.sql.functions.FunctionElement):
    """The column, kept from driving SQLite's plan: ``+column``, SQLite's way to rule an index out.

    SQLite has no statistics, so for ``inbox_id = ? AND id > ?`` it prefers
    the (inbox_id, date) index and walks every message of the inbox, where the
    id range alone reads the batch. PostgreSQL plans from statistics.
    """

    name = "not_indexed"
    inherit_cache = True

    @property
    def type(self):
        return next(iter(self.clauses)).type


@compiles(NotIndexed, "sqlite")
def _not_indexed_sqlite(element, compiler, **kw):
    return "+" + compiler.process(next(iter(element.clauses)), **kw)


@compiles(NotIndexed, "postgresql")
def _not_indexed_postgresql(element, compiler, **kw):
    return compiler.process(next(iter(element.clauses)), **kw)


@compiles(DelaySeconds)
@compiles(SentBefore)
@compiles(NotIndexed)
def _unsupported(element, compiler, **kw):
    raise CompileError(f"reply_condition supports SQLite and PostgreSQL, not {compiler.dialect.name}")


_INSERTED = ("reply_pk", "our_pk", "contact_email", "our_inbox_id", "sent_at", "replied_at", "delay_seconds",
             "matched_by", "created_at")


def _match(inbox_id: int, last: int, high: int) -> list[NewResponse]:
    """Store the responses the inbox's messages ``last < id <= high`` take part in; return those new."""
    table = Response.__table__
    returned = Message.__table__.alias("returned")
    # Spelled out: SQLAlchemy renders RETURNING columns unqualified and cannot correlate a subquery there.
    of_reply = returned.c.id == sa.literal_column(f"{table.name}.reply_pk")
    returning = (
        table.c.reply_pk,
        table.c.our_pk,
        table.c.contact_email,
        table.c.our_inbox_id,
        table.c.replied_at,
        table.c.matched_by,
        sa.select(returned.c.dedup_key).where(of_reply).scalar_subquery().label("reply_key"),
        sa.select(returned.c.inbox_id).where(of_reply).scalar_subquery().label("reply_inbox_id"),
        table.c.id,
    )
    found: list[NewResponse] = []
    first_id = None
    for query in _match_queries(inbox_id, last, high, datetime.now(UTC)):
        statement = insert_or_ignore(Response.__table__).from_select(_INSERTED, query).returning(*returning)
        for row in db.session.execute(statement):
            first_id = row.id if first_id is None else min(first_id, row.id)
            found.append(
                NewResponse(
                    reply_pk=row.reply_pk,
                    our_pk=row.our_pk,
                    contact_email=row.contact_email,
                    reply_key=row.reply_key,
                    reply_inbox_id=row.reply_inbox_id,
                    our_inbox_id=row.our_inbox_id,
                    replied_at=row.replied_at,
                    matched_by=row.matched_by,
                )
            )
    if found:
        seen = _replies_answered_before({response.reply_key for response in found}, first_id)
        if seen:
            found = [dataclasses.replace(response, reply_seen_before=True) if response.reply_key in seen else response
                     for response in found]
    return found


def _replies_answered_before(reply_keys: set[str], first_id: int) -> set[str]:
    """Which replies (by dedup key) took part in a response stored before ``first_id``.

    A reply matches a second e-mail of ours in a later batch or a later sync
    (our copy synced after the reply, the same reply in another inbox): the
    contact replied once, so the reply is announced once. Response ids grow
    with each batch, and batches take turns, so "stored before" is "a lower id".
    """
    reply = Message.__table__
    response = Response.__table__
    return set(db.session.scalars(
        sa.select(reply.c.dedup_key).distinct()
        .select_from(response.join(reply, reply.c.id == response.c.reply_pk))
        .where(member_of(reply.c.dedup_key, sorted(reply_keys)), response.c.id < first_id)
    ))


def _match_queries(inbox_id: int, last: int, high: int, now: datetime) -> list[sa.Select]:
    """The (reply, ours) pairs where the reply or our e-mail is among the batch, as rows of a Response.

    Each query starts from the batch's id range on one side and follows one
    index per step to the other side. The range is repeated on both tables
    of the batch's side, the same rows, so that planners know it on each. Header matches go first so that a pair
    found both ways keeps "header". Whether our e-mail was addressed to the
    replying contact is a correlated EXISTS on the address table's primary
    key, so no plan ever walks a contact's whole history.
    """
    messages = Message.__table__
    reply, ours = messages.alias("reply"), messages.alias("ours")
    recipient = MessageAddress.__table__.alias("recipient")
    reference = ReplyReference.__table__.alias("reference")
    reply_subject, our_subject = SubjectKey.__table__.alias("reply_subject"), SubjectKey.__table__.alias("our_subject")

    def in_batch(column):
        return sa.and_(column > last, column <= high)

    def values(matched_by: str) -> list:
        return [
            reply.c.id,
            ours.c.id,
            reply.c.from_email,
            ours.c.inbox_id,
            ours.c.date,
            reply.c.date,
            DelaySeconds(ours.c.date, reply.c.date),
            sa.literal(matched_by, Response.matched_by.type),
            sa.literal(now, Response.created_at.type),
        ]

    # A scalar subquery with LIMIT, not EXISTS: PostgreSQL turns EXISTS into a semi join and may then
    # probe the address table by e-mail alone, walking the contact's whole history for every pair
    # (seconds per batch for a busy contact). A subquery is planned on its own, on the primary key.
    addressed_to_sender = (
        sa.select(recipient.c.message_pk)
        .where(
            recipient.c.message_pk == ours.c.id,
            recipient.c.role.in_(RECIPIENT_ROLES),
            recipient.c.email == reply.c.from_email,
        )
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )
    # dedup_key equals the Message-ID whenever there is one, and is the indexed column of the two.
    names_ours = sa.and_(ours.c.dedup_key == reference.c.ref_id, ours.c.message_id.is_not(None),
                         ours.c.direction == "out")
    by_header_from_reply = (
        sa.select(*values(BY_HEADER))
        .select_from(reference.join(reply, reply.c.id == reference.c.message_pk).join(ours, names_ours))
        .where(in_batch(reference.c.message_pk), in_batch(reply.c.id), NotIndexed(reply.c.inbox_id) == inbox_id,
               addressed_to_sender)
    )
    by_header_from_ours = (
        sa.select(*values(BY_HEADER))
        .select_from(ours.join(reference, names_ours).join(reply, reply.c.id == reference.c.message_pk))
        .where(in_batch(ours.c.id), NotIndexed(ours.c.inbox_id) == inbox_id, addressed_to_sender)
    )
    same_subject = sa.and_(our_subject.c.subject_key == reply_subject.c.subject_key, our_subject.c.side == OURS)
    subject_pairs = (
        reply_subject.join(reply, reply.c.id == reply_subject.c.message_pk)
        .join(our_subject, same_subject)
        .join(ours, ours.c.id == our_subject.c.message_pk)
    )
    # The fallback only answers an earlier e-mail of ours.
    subject_match = sa.and_(reply_subject.c.side == REPLY, SentBefore(ours.c.date, reply.c.date), addressed_to_sender)
    by_subject_from_reply = (
        sa.select(*values(BY_SUBJECT))
        .select_from(subject_pairs)
        .where(in_batch(reply_subject.c.message_pk), in_batch(reply.c.id), NotIndexed(reply.c.inbox_id) == inbox_id,
               subject_match)
    )
    by_subject_from_ours = (
        sa.select(*values(BY_SUBJECT))
        .select_from(subject_pairs)
        .where(in_batch(our_subject.c.message_pk), in_batch(ours.c.id), NotIndexed(ours.c.inbox_id) == inbox_id,
               subject_match)
    )
    return [by_header_from_reply, by_header_from_ours, by_subject_from_reply, by_subject_from_ours]
