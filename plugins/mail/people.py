"""The people of connected mailboxes, offered through the host's ``contact_providers`` hook.

The mail core offers them whatever transport stored the mail; importers such
as contacts_import find the provider by its key.

One aggregated query per call (grouped by address and display name), never a
loop over messages: a 100,000-message mailbox is read in about a second.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from host_app.api import ContactProvider, NotIndexed, Person, db

from .models import RECIPIENT_ROLES, Inbox, Message, MessageAddress
from .names import best_name, clean_name

# The key and the source label keep the name they had when imap_inbox stored the mail, so contacts
# imported before and after the mail core name their source alike.
PROVIDER_KEY = "imap_inbox"


def _relevant(m, a):
    """Senders of inbound mail, and To/Cc/Bcc recipients of our outbound mail."""
    return sa.or_(
        sa.and_(m.c.direction == "in", a.c.role == "from"),
        sa.and_(m.c.direction == "out", a.c.role.in_(RECIPIENT_ROLES)),
    )


class MailboxProvider(ContactProvider):
    """People who wrote to a connected inbox and people it wrote to (one source per inbox).

    Besides the host's ``people(source_id, since)`` it offers a cursor: the
    highest message id, so an importer can ask only for people appearing in
    messages stored after its last run (``after_cursor``), whatever their dates.
    """

    key = PROVIDER_KEY
    label = "Connected mailboxes"

    def sources(self) -> list[tuple[int, str]]:
        inboxes = db.session.scalars(db.select(Inbox).order_by(Inbox.id)).all()
        return [(inbox.id, source_label(inbox)) for inbox in inboxes]

    def cursor(self, source_id: int) -> int:
        """The newest stored message of the inbox (0 when empty)."""
        return db.session.scalar(sa.select(sa.func.max(Message.id)).where(Message.inbox_id == source_id)) or 0

    def people(
        self,
        source_id: int,
        since: datetime | None = None,
        *,
        after_cursor: int | None = None,
        upto_cursor: int | None = None,
    ) -> Iterator[Person]:
        """People of inbox ``source_id``; with ``since``/``after_cursor`` only those seen in newer messages.

        Facts about each person (names, first/last seen, who wrote to whom)
        always come from the whole mailbox up to ``upto_cursor``.
        """
        m = Message.__table__
        a = MessageAddress.__table__
        inbound_human = sa.and_(m.c.direction == "in", m.c.automated == sa.false())
        inbound_automated = sa.and_(m.c.direction == "in", m.c.automated == sa.true())
        outbound_human = sa.and_(m.c.direction == "out", m.c.automated == sa.false())
        stmt = (
            sa.select(
                a.c.email,
                a.c.name,
                sa.func.count().label("n"),
                sa.func.min(m.c.date).label("first"),
                sa.func.max(m.c.date).label("last"),
                sa.func.max(sa.case((inbound_human, 1), else_=0)).label("wrote_human"),
                sa.func.max(sa.case((inbound_automated, 1), else_=0)).label("wrote_automated"),
                sa.func.max(sa.case((outbound_human, 1), else_=0)).label("we_wrote"),
            )
            .select_from(a.join(m, m.c.id == a.c.message_pk))
            .where(a.c.inbox_id == source_id, _relevant(m, a))
            # Grouped after reading the rows in message order (see NotIndexed); the address index read them
            # in address order, one message lookup per row at random: twice the time.
            .group_by(NotIndexed(a.c.email), a.c.name)
        )
        if upto_cursor is not None:
            stmt = stmt.where(m.c.id <= upto_cursor)
        # After cursor 0 (a first import) every person is new: no second pass over the mailbox to say so.
        if after_cursor or since is not None:
            m2, a2 = m.alias("newer"), a.alias("newer_address")
            newer = (
                sa.select(a2.c.email)
                .select_from(a2.join(m2, m2.c.id == a2.c.message_pk))
                .where(a2.c.inbox_id == source_id, _relevant(m2, a2))
            )
            if after_cursor:
                newer = newer.where(m2.c.id > after_cursor)
            if since is not None:
                newer = newer.where(m2.c.date > since)
            stmt = stmt.where(a.c.email.in_(newer))
        yield from _merge(db.session.execute(stmt))


def _merge(rows) -> Iterator[Person]:
    """Fold the (address, name) groups of one query into one Person per address."""
    by_email: dict[str, list] = {}
    for email, name, count, first, last, human, automated, we_wrote in rows:
        entry = by_email.get(email)
        if entry is None:
            by_email[email] = [[(name, count, last)], first, last, human, automated, we_wrote]
            continue
        entry[0].append((name, count, last))
        if first is not None and (entry[1] is None or first < entry[1]):
            entry[1] = first
        if last is not None and (entry[2] is None or last > entry[2]):
            entry[2] = last
        entry[3] |= human
        entry[4] |= automated
        entry[5] |= we_wrote
    for email, (names, first, last, human, automated, we_wrote) in by_email.items():
        yield Person(
            email=email,
            name=best_name(names, email) if len(names) > 1 else clean_name(names[0][0], email),
            first_seen=first,
            last_seen=last,
            we_wrote_to=bool(we_wrote),
            wrote_to_us=bool(human),
            # Only bulk or machine mail from them (lists, newsletters, auto-replies).
            automated=bool(automated) and not human,
        )


def source_label(inbox: Inbox) -> str:
    """What agents read as the source of a contact made from ``inbox``: words that stay true after the inbox
    is deleted, and never the inbox's admin-only name."""
    if inbox.owner is not None:
        return f"from {inbox.owner.name or inbox.owner.email}'s mailbox"
    return f"from the mailbox {inbox.email}"
