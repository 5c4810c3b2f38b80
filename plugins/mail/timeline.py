"""E-mails on a contact's timeline, whatever transport stored them: received from them by any team inbox,
or sent to them from one.

"Sent to them" is To, Cc or Bcc: a Bcc'd contact sees our e-mail like any recipient ("sent").

Each page is a few keyset queries on ``mail_message_address (email, role,
date)``: a backwards index range scan that stops after ``limit`` rows, so a
contact with thousands of messages costs the same as one with ten. The same
e-mail stored twice (two folders, two inboxes) is shown once (key = dedup key).
The source shown is the owner agent's name, never the inbox name.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask import has_request_context, url_for

from host_app.api import Agent, TimelineEntry, db, normalize_email

from .conversations import thread_ids
from .models import RECIPIENT_ROLES, Inbox, Message, MessageAddress

# (address role, message direction) pairs that put a message on the contact's timeline.
ROLES = (("from", "in"), *((role, "out") for role in RECIPIENT_ROLES))
DEFAULT_SOURCE = "Team inbox"
SUMMARY_LENGTH = 200


def _page(email: str, role: str, direction: str, before: datetime | None, limit: int) -> list[tuple]:
    a, m = MessageAddress.__table__, Message.__table__
    query = (
        sa.select(m.c.id, m.c.dedup_key, m.c.date)
        .select_from(a.join(m, m.c.id == a.c.message_pk))
        .where(a.c.email == email, a.c.role == role, m.c.direction == direction)
        .order_by(a.c.date.desc())  # the index order: no sort step, stops after `limit` rows
        .limit(limit)
    )
    if before is not None:
        query = query.where(a.c.date < before)
    return db.session.execute(query).all()


def message_ids_for(email: str, before: datetime | None, limit: int) -> list[int]:
    """Ids of the newest ``limit`` distinct messages (by dedup key) of the contact, older than ``before``."""
    fetch = max(limit, 1) * 2
    while True:
        rows, exhausted = [], True
        for role, direction in ROLES:
            page = _page(email, role, direction, before, fetch)
            rows.extend(page)
            exhausted &= len(page) < fetch
        rows.sort(key=lambda r: (r[2], r[0]), reverse=True)
        chosen: dict[str, int] = {}
        for message_pk, key, _ in rows:
            chosen.setdefault(key, message_pk)
            if len(chosen) == limit:
                break
        if len(chosen) >= limit or exhausted:
            return list(chosen.values())
        fetch *= 4  # many copies of the same mail: look further


def timeline_entries(contact, before: datetime | None, limit: int) -> list[TimelineEntry]:
    email = normalize_email(contact.email)
    if not email or limit <= 0:
        return []
    ids = message_ids_for(email, before, limit)
    if not ids:
        return []
    messages = db.session.execute(
        sa.select(Message, sa.func.coalesce(Agent.name, DEFAULT_SOURCE))
        .join(Inbox, Inbox.id == Message.inbox_id)
        .outerjoin(Agent, Agent.id == Inbox.owner_id)
        .where(Message.id.in_(ids))
    ).all()
    recipients: dict[int, dict[str, list[str]]] = {}
    for message_pk, role, address in db.session.execute(
        sa.select(MessageAddress.message_pk, MessageAddress.role, MessageAddress.email)
        .where(MessageAddress.message_pk.in_(ids), MessageAddress.role.in_(RECIPIENT_ROLES))
        .order_by(MessageAddress.message_pk)
    ):
        recipients.setdefault(message_pk, {r: [] for r in RECIPIENT_ROLES})[role].append(address)
    threads = thread_ids(message for message, _ in messages)
    entries = []
    for message, source in messages:
        to = recipients.get(message.id, {})
        summary = (message.preview or "")[:SUMMARY_LENGTH]
        entries.append(TimelineEntry(
            date=message.date,
            kind="email",
            title=message.subject or "(no subject)",
            key=message.dedup_key,
            source=source,
            summary=summary,
            direction=message.direction,
            # Pages link the entry to the whole e-mail; the command line has no pages to link to.
            url=url_for("mail.message_view", message_id=message.id) if has_request_context() else "",
            author=message.from_name or message.from_email or "",
            thread=threads[message.id],
            details={
                "message_id": message.message_id,
                "inbox_id": message.inbox_id,
                "from": message.from_email,
                "from_name": message.from_name,
                "to": to.get("to", []),
                "cc": to.get("cc", []),
                "bcc": to.get("bcc", []),
                "thread_id": threads[message.id],
            },
        ))
    entries.sort(key=lambda e: e.date, reverse=True)
    return entries
