"""Finding candidate replies: the incoming messages that may answer one of ours, and what they name.

A batch of new messages is indexed in Python, because that needs parsing: the
Message-IDs a possible reply names go to ``reply_condition_reference``, the
hashed normalized subjects of our e-mails, and of possible replies without
threading headers, to ``reply_condition_subject``. Mail a machine sent (the
mail core's rule, ``plugins/mail/automated.py``) is never a candidate.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from host_app.api import NotIndexed, bulk_insert_or_ignore, db
from plugins.mail.automated import sent_by_machine
from plugins.mail.conversations import referenced_ids
from plugins.mail.models import Message
from plugins.mail.subjects import reply_subject_key, subject_key

from .models import OURS, REPLY, ReplyReference, SubjectKey

INDEX_CHUNK = 2000  # messages read and indexed at a time within a batch (bounds the rows held in Python)


def index_messages(inbox_id: int, last: int, batch_size: int,
                   upto: int | None = None) -> tuple[int, bool, dict[str, int]]:
    """Index the next batch (``batch_size`` messages at most) of the inbox's messages after ``last``
    (and up to ``upto``, when given).

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
    while seen < batch_size:
        limit = min(INDEX_CHUNK, batch_size - seen)
        query = sa.select(*columns).where(NotIndexed(message.inbox_id) == inbox_id, message.id > high)
        if upto is not None:
            query = query.where(message.id <= upto)
        rows = db.session.execute(query.order_by(message.id).limit(limit)).all()
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
