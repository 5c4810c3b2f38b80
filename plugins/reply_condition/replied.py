"""The "contact replied" event: announcing the responses the matcher stored, once per reply."""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from flask import current_app

from host_app.api import Contact, db, emit, member_of

from .responses import NewResponse

CONTACT_REPLIED = "contact_replied"
# Replies older than this when first seen (a first sync's history) raise no event; see the docs.
DEFAULT_EVENT_MAX_AGE_DAYS = 14


def announce(found: list[NewResponse], sync_run_id: int | None = None) -> int:
    """Emit one ``contact_replied`` event per reply seen for the first time (keyed by its Message-ID).

    Returns how many. A reply that also answers another of our e-mails found
    later (a new response, an old reply) is not announced again.
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
    emails = sorted({r.contact_email for responses in by_reply.values() for r in responses})
    known = db.select(Contact.email, Contact.id).where(member_of(Contact.email, emails))
    contact_ids = dict(db.session.execute(known).all())
    for reply_key, responses in sorted(by_reply.items()):
        first = responses[0]
        emit(
            CONTACT_REPLIED,
            key=reply_key,
            contact_ids=[contact_ids[first.contact_email]] if first.contact_email in contact_ids else [],
            payload={
                "contact_email": first.contact_email,
                "reply_message_pk": first.reply_pk,
                "reply_inbox_id": first.reply_inbox_id,
                "our_message_pks": sorted({r.our_pk for r in responses}),
                "our_inbox_ids": sorted({r.our_inbox_id for r in responses}),
                "replied_at": first.replied_at.isoformat(),
                "sync_run_id": sync_run_id,
            },
        )
    return len(by_reply)
