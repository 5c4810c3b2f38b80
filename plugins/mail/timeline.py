"""E-mails on a contact's timeline, whatever transport stored them: received from them by any team inbox,
or sent to them from one.

"Sent to them" is To, Cc or Bcc: a Bcc'd contact sees our e-mail like any recipient ("sent").

Each page is a few keyset queries on ``mail_message_address (email, role,
date)``: a backwards index range scan that stops after ``limit`` rows, so a
contact with thousands of messages costs the same as one with ten. The same
e-mail stored twice (two folders, two inboxes) is shown once (key = dedup key).
The source shown is the owner agent's name, never the inbox name.

**Filters** (the page's query parameters, ``timeline_filters``): ``direction``
(``in`` received, ``out`` sent) keeps only the matching (address role,
direction) pairs and ``inbox_id`` one inbox's rows, both inside the keyset
queries, so a filtered page is as full and as cheap as an unfiltered one.

**Threads** are the same on every page: a message's thread comes from its
References / In-Reply-To, which name the same root wherever the message is
shown; a reply found by its subject alone ("Re: Offer") also looks for the
earlier messages of the contact with that subject on older pages
(``_subject_context``), so it joins the same thread as when they share a page.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask import has_request_context, url_for

from host_app.api import Agent, TimelineEntry, TimelineFilter, db, normalize_email

from .attachments import listed_for
from .conversations import referenced_ids, thread_ids
from .models import RECIPIENT_ROLES, Inbox, Message, MessageAddress
from .subjects import normalize_subject, reply_subject_key, subject_key

# (address role, message direction) pairs that put a message on the contact's timeline.
ROLES = (("from", "in"), *((role, "out") for role in RECIPIENT_ROLES))
DEFAULT_SOURCE = "Team inbox"
SUMMARY_LENGTH = 200
DIRECTIONS = ("in", "out")
SUBJECT_CONTEXT = 50  # earlier messages of a subject looked at to place a reply named by its subject alone


def _page(email: str, role: str, direction: str, before: datetime | None, limit: int,
          inbox_id: int | None = None) -> list[tuple]:
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
    if inbox_id is not None:
        query = query.where(a.c.inbox_id == inbox_id)
    return db.session.execute(query).all()


def parse_filters(filters: dict | None) -> tuple[str | None, int | None]:
    """(direction, inbox id) of the page's filters; what is not a valid value is no filter."""
    filters = filters or {}
    direction = filters.get("direction")
    inbox = str(filters.get("inbox_id") or "")
    return (direction if direction in DIRECTIONS else None), (int(inbox) if inbox.isdigit() else None)


def message_ids_for(email: str, before: datetime | None, limit: int, direction: str | None = None,
                    inbox_id: int | None = None) -> list[int]:
    """Ids of the newest ``limit`` distinct messages (by dedup key) of the contact, older than ``before``,
    received (``direction="in"``) or sent (``"out"``) or both, in one inbox or all."""
    fetch = max(limit, 1) * 2
    roles = [(role, d) for role, d in ROLES if direction in (None, d)]
    while True:
        rows, exhausted = [], True
        for role, message_direction in roles:
            page = _page(email, role, message_direction, before, fetch, inbox_id)
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


def inbox_filter() -> TimelineFilter:
    """The "Inbox" choice above a timeline: each inbox by its address and whose it is, never its name
    (admins see that on the inbox's own pages; timelines never show it)."""
    choices = []
    for inbox_id, address, owner in db.session.execute(
        sa.select(Inbox.id, Inbox.email, Agent.name)
        .outerjoin(Agent, Agent.id == Inbox.owner_id)
        .order_by(Inbox.email, Inbox.id)
    ):
        choices.append((str(inbox_id), f"{address} ({owner or DEFAULT_SOURCE})"))
    return TimelineFilter("inbox_id", "Inbox", tuple(choices))


def _search_word(subject: str) -> str:
    # One word of the subject to narrow the look-up; ASCII words match case-insensitively on every database.
    words = normalize_subject(subject).split()
    ascii_words = [w for w in words if w.isascii()]
    return max(ascii_words or words, key=len, default="")


def _subject_context(email: str, messages: list[Message]) -> list[Message]:
    """Earlier messages of the contact that replies on this page named only by subject may answer."""
    page_keys = {subject_key(m.subject) for m in messages}
    context: dict[int, Message] = {}
    for message in messages:
        asked = reply_subject_key(message.subject)
        if asked is None or referenced_ids(message.in_reply_to, message.references):
            continue  # threaded by its references, the same on every page
        word = _search_word(message.subject)
        if not word or (asked in page_keys and any(
                m.date < message.date and subject_key(m.subject) == asked for m in messages)):
            continue
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        candidates = db.session.scalars(
            sa.select(Message)
            .join(MessageAddress, MessageAddress.message_pk == Message.id)
            .where(MessageAddress.email == email, MessageAddress.date < message.date,
                   sa.or_(*(sa.and_(MessageAddress.role == role, Message.direction == d) for role, d in ROLES)),
                   Message.subject.ilike(f"%{escaped}%", escape="\\"))
            .order_by(MessageAddress.date.desc())
            .limit(SUBJECT_CONTEXT)
        ).unique()
        for candidate in candidates:
            if subject_key(candidate.subject) == asked:
                context.setdefault(candidate.id, candidate)
    return list(context.values())


def timeline_entries(contact, before: datetime | None, limit: int, filters: dict | None = None) -> list[TimelineEntry]:
    email = normalize_email(contact.email)
    if not email or limit <= 0:
        return []
    direction, inbox_id = parse_filters(filters)
    ids = message_ids_for(email, before, limit, direction, inbox_id)
    if not ids:
        return []
    messages = db.session.execute(
        sa.select(Message, sa.func.coalesce(Agent.name, DEFAULT_SOURCE), Inbox.email)
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
    page = [message for message, _, _ in messages]
    threads = thread_ids(page + _subject_context(email, page))
    attachments = listed_for(ids)
    entries = []
    for message, source, inbox_email in messages:
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
            attachments=len(attachments.get(message.id, [])),
            details={
                "message_id": message.message_id,
                "inbox_id": message.inbox_id,
                "inbox": inbox_email,  # its address, never its name (admins only)
                "from": message.from_email,
                "from_name": message.from_name,
                "to": to.get("to", []),
                "cc": to.get("cc", []),
                "bcc": to.get("bcc", []),
                "thread_id": threads[message.id],
                "attachments": [{"name": a.filename, "type": a.content_type, "size": a.size}
                                for a in attachments.get(message.id, [])],
            },
        ))
    entries.sort(key=lambda e: e.date, reverse=True)
    return entries
