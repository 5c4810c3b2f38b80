"""The matching rules, as SQL: which (reply, our e-mail) pairs are responses.

A reply names our e-mail's Message-ID in In-Reply-To or References (by
header), or, carrying neither header, has the subject "Re: <our subject>" of
an earlier e-mail of ours (by subject); either way our e-mail was addressed
to the replying contact (To, Cc or Bcc). Each rule is one query per side of
the batch, shaped as rows of ``reply_condition_response``.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from host_app.api import NotIndexed
from plugins.mail.models import RECIPIENT_ROLES, Message, MessageAddress

from .models import BY_HEADER, BY_SUBJECT, OURS, REPLY, ReplyReference, Response, SubjectKey
from .sql import DelaySeconds, SentBefore


def match_queries(inbox_id: int, last: int, high: int, now: datetime) -> list[sa.Select]:
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
