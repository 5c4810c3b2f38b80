"""The correspondents of one connected inbox, as a group an automation can be run over ("Run now")."""
from __future__ import annotations

import sqlalchemy as sa

from host_app.api import Agent, Audience, Contact, db

from .models import Inbox, MessageAddress


class InboxCorrespondents(Audience):
    """Contacts who wrote to the inbox or were written to from it (any address on its stored mail)."""

    key = "inbox"
    label = "Inbox"

    def choices(self):
        rows = db.session.execute(
            sa.select(Inbox.id, Inbox.email, Inbox.username, Agent.name)
            .outerjoin(Agent, Agent.id == Inbox.owner_id)
            .order_by(Agent.name, Inbox.email, Inbox.id)
        ).all()
        # Shown as owner and address: an inbox's own name is for the admins who connect it.
        return [(str(row.id), f"{row.name} <{row.email or row.username}>" if row.name else (row.email or row.username))
                for row in rows]

    def contact_ids(self, value):
        if not str(value).isdigit():
            raise ValueError(f"{value!r} is not an inbox; choose one from the list.")
        inbox = db.session.get(Inbox, int(value))
        if inbox is None:
            raise ValueError(f"inbox {value} no longer exists; choose one from the list.")
        addresses = sa.select(MessageAddress.email).where(
            MessageAddress.inbox_id == inbox.id, MessageAddress.email != inbox.email
        )
        return db.session.scalars(sa.select(Contact.id).where(Contact.email.in_(addresses)))
