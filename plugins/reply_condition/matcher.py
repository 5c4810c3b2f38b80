"""Finds responses among newly synced messages and stores them in ``reply_condition_response``: the run.

Runs on a job of its own after every sync of an inbox (jobs.py, enqueued from the mail core's
``mailbox_synced`` hook) on the messages the inbox gained since the last run, in both
directions, because INBOX and Sent sync in either order and replies arrive in any connected
inbox:

* a new possible reply is matched against all our e-mails;
* a new e-mail of ours is matched against all possible replies already seen.

The new messages go in batches of consecutive ids of the inbox (``last < id <=
high``), one transaction each, which this module runs. A batch is first indexed
in Python (``candidates.py``): the Message-IDs a reply names, hashed normalized
subjects. Then the database matches it (``matching.py``): per match kind and
side, one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` that starts
from the batch's id range and follows indexes (a reference to our e-mail's
``dedup_key``, a subject key, the recipients of our e-mail in
``mail_message_address``). Only the rows these inserts return, the responses new
in this batch, come back to Python (``responses.py``); each batch's are handed
on before the next batch starts, so memory does not grow with the mailbox.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa

from host_app.api import NotIndexed, db, insert_or_ignore
from plugins.mail.models import Folder, Inbox, Message
from plugins.mail.statistics import refresh_if_stale

from .candidates import index_messages
from .models import Cursor, ReplyReference, Response, SubjectKey
from .responses import NewResponse, store_responses

log = logging.getLogger(__name__)

# Messages per transaction: a first sync of a large mailbox commits as it goes. The matching
# statements cost about the same whatever the batch size, so batches are large.
BATCH_SIZE = 10000
# A batch that adds at least this many rows to an index table, and a fifth of what it held, refreshes its
# planner statistics (PostgreSQL); a first sync fills these tables from nothing.
ANALYZE_MIN_ROWS = 1000
# An arbitrary constant naming this plugin's PostgreSQL advisory lock.
_LOCK_KEY = 0x5265706C79  # "Reply"


def match_batches(inbox_id: int, upto: int | None = None) -> Iterator[list[NewResponse]]:
    """Match every message the inbox gained since the last run; yield the responses each batch stored.

    Each batch is committed before its responses are yielded, so a consumer may
    act on them (emit events, run automations) between batches. Pairs a folder
    role change made us match again are not yielded again. Safe to run
    concurrently for several inboxes: the batches take turns (a lock on
    PostgreSQL, SQLite's single writer), so a reply and our e-mail synced at the
    same moment by two inboxes still meet.

    ``upto``: match only messages with ids up to this one (what a given sync run had stored), so a later
    run's messages wait for that run's own follow-ups (see jobs.py).
    """
    # The sync committed before emitting its event; end any read transaction so we see everything.
    db.session.commit()
    _rolled_back_on_error(_refresh_message_statistics, inbox_id)
    more = True
    while more:
        stored, more = _rolled_back_on_error(_process_batch, inbox_id, upto)
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


def _process_batch(inbox_id: int, upto: int | None = None) -> tuple[list[NewResponse], bool]:
    """Index and match the next batch of the inbox's messages; return (responses stored, more to do)."""
    _take_turns()
    if db.session.get(Inbox, inbox_id) is None:
        db.session.commit()
        return [], False
    last = _cursor_position(inbox_id)
    if _rematch_if_roles_changed(inbox_id):
        last = 0
    high, more, added = index_messages(inbox_id, last, BATCH_SIZE, upto)
    _refresh_index_statistics(added)
    stored = store_responses(inbox_id, last, high) if high > last else []
    if high > last:
        db.session.execute(
            sa.update(Cursor)
            .where(Cursor.inbox_id == inbox_id)
            .values(last_message_pk=high, updated_at=datetime.now(UTC))
        )
    db.session.commit()
    return stored, more


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


def _refresh_message_statistics(inbox_id: int) -> None:
    """Fresh planner statistics of the message tables before matching a large backlog (see plugins.mail.statistics).

    Once per run: matching does not change these tables.
    """
    last = db.session.scalar(sa.select(Cursor.last_message_pk).where(Cursor.inbox_id == inbox_id)) or 0
    refresh_if_stale(inbox_id, last)


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
