"""Storing responses: the pairs the matching rules find, inserted once, and those new in a batch handed back."""
from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import sqlalchemy as sa

from host_app.api import db, insert_or_ignore, member_of
from plugins.mail.models import Message

from .matching import match_queries
from .models import Response


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


_INSERTED = ("reply_pk", "our_pk", "contact_email", "our_inbox_id", "sent_at", "replied_at", "delay_seconds",
             "matched_by", "created_at")


def store_responses(inbox_id: int, last: int, high: int) -> list[NewResponse]:
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
    for query in match_queries(inbox_id, last, high, datetime.now(UTC)):
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
