"""Who may open a stored e-mail: whoever could reach it through a contact's timeline.

Every agent sees every contact's timeline, so a message is readable when it
is on one (timeline.py's rules: received from a contact, or sent to one in
To, Cc or Bcc). Anything else (mail of people who are not contacts) stays
unreachable by guessing its id: the views answer 404, as for no message.
"""
from __future__ import annotations

import sqlalchemy as sa

from host_app.api import Contact, db

from .models import RECIPIENT_ROLES, Message, MessageAddress


def readable_message(message_id: int) -> Message | None:
    """The message when it is on some contact's timeline, else None."""
    message = db.session.get(Message, message_id)
    if message is None:
        return None
    roles = ("from",) if message.direction == "in" else RECIPIENT_ROLES
    on_a_timeline = db.session.execute(
        sa.select(sa.literal(1))
        .select_from(MessageAddress)
        .join(Contact, Contact.email == MessageAddress.email)
        .where(MessageAddress.message_pk == message.id, MessageAddress.role.in_(roles))
        .limit(1)
    ).first()
    return message if on_a_timeline is not None else None
