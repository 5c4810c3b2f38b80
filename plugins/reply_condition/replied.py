"""The "contact replied" event: announcing the responses the matcher stored, once per occurrence."""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from flask import current_app

from host_app.api import Contact, db, emit, member_of
from plugins.mail.models import Message

from .responses import NewResponse

CONTACT_REPLIED = "contact_replied"
# Replies older than this when first seen (a first sync's history) raise no event; see the docs.
DEFAULT_EVENT_MAX_AGE_DAYS = 14


def announce(found: list[NewResponse], sync_run_id: int | None = None) -> int:
    """Emit ``contact_replied`` for the replies seen for the first time, once per occurrence; returns how many.

    An occurrence is a thread by default (``REPLY_CONDITION_EVENT_ONCE_PER``
    "thread"): the contact's replies to the same e-mail of ours share the key
    ``thread:<our e-mail's Message-ID>``, so a second reply to one e-mail never
    fires the same automation again for that contact. With "reply", each reply
    is its own occurrence (keyed by its Message-ID). A reply that also answers
    another of our e-mails found later is not announced again.
    """
    max_age = current_app.config.get("REPLY_CONDITION_EVENT_MAX_AGE_DAYS", DEFAULT_EVENT_MAX_AGE_DAYS)
    oldest = datetime.now(UTC) - timedelta(days=max_age) if max_age else None
    by_reply: dict[str, list[NewResponse]] = defaultdict(list)
    for response in found:
        if response.reply_seen_before:
            continue
        if oldest is None or response.replied_at >= oldest:
            by_reply[response.reply_key].append(response)
    if not by_reply:
        return 0
    per_thread = current_app.config.get("REPLY_CONDITION_EVENT_ONCE_PER", "thread") != "reply"
    ours = {}
    if per_thread:
        our_pks = sorted({r.our_pk for responses in by_reply.values() for r in responses})
        stmt = db.select(Message.id, Message.dedup_key).where(member_of(Message.id, our_pks))
        ours = dict(db.session.execute(stmt).all())
    occurrences: dict[tuple[str, str], list[NewResponse]] = defaultdict(list)
    for reply_key, responses in by_reply.items():
        first_ours = min(r.our_pk for r in responses)
        key = f"thread:{ours[first_ours]}" if per_thread and first_ours in ours else reply_key
        occurrences[(responses[0].contact_email, key)].extend(responses)
    emails = sorted({email for email, _ in occurrences})
    known = db.select(Contact.email, Contact.id).where(member_of(Contact.email, emails))
    contact_ids = dict(db.session.execute(known).all())
    for (email, key), responses in sorted(occurrences.items()):
        first = min(responses, key=lambda r: (r.replied_at, r.reply_pk))
        emit(
            CONTACT_REPLIED,
            key=key,
            contact_ids=[contact_ids[email]] if email in contact_ids else [],
            payload={
                "contact_email": email,
                "reply_message_pk": first.reply_pk,
                "reply_inbox_id": first.reply_inbox_id,
                "our_message_pks": sorted({r.our_pk for r in responses}),
                "our_inbox_ids": sorted({r.our_inbox_id for r in responses}),
                "replied_at": first.replied_at.isoformat(),
                "sync_run_id": sync_run_id,
            },
        )
    return len(occurrences)
