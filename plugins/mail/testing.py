"""Test helpers: inboxes and messages written straight into the mail core's tables, as a sync would store them.

No transport and no server: the inboxes are ``stored`` ones, for plugins that read mail.
"""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from host_app.api import db

from .models import ROLE_INBOX, ROLE_SENT, Folder, Inbox, Message, MessageAddress

Address = str | tuple[str, str]
START = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


class MailRows:
    """Builds inboxes and message metadata as a sync would store them (inside an app context)."""

    def __init__(self) -> None:
        self._uids = itertools.count(1)
        self._clock = itertools.count(0)

    def inbox(self, email: str, owner_id: int | None = None, username: str | None = None,
              name: str | None = None) -> Inbox:
        inbox = Inbox(name=name or f"Admin-only name {email}", email=email, username=username or email,
                      owner_id=owner_id)
        inbox.folders = [Folder(name="INBOX", role=ROLE_INBOX), Folder(name="Sent", role=ROLE_SENT)]
        db.session.add(inbox)
        db.session.commit()
        return inbox

    def message(self, inbox: Inbox, direction: str, from_: Address, to: list[Address] = (),
                cc: list[Address] = (), automated: bool = False, date: datetime | None = None,
                **columns) -> Message:
        folder = inbox.folders[0 if direction == "in" else 1]
        date = date or START + timedelta(hours=next(self._clock))
        uid = next(self._uids)
        sender = _split(from_)
        msg = Message(inbox_id=inbox.id, folder_id=folder.id, uid=uid, message_id=f"m{uid}@test",
                      dedup_key=f"m{uid}@test", direction=direction, subject=columns.pop("subject", f"message {uid}"),
                      from_email=sender[0], from_name=sender[1], date=date, automated=automated, **columns)
        roles = [("from", from_)] + [("to", a) for a in to] + [("cc", a) for a in cc]
        seen = set()
        for role, address in roles:
            email, name = _split(address)
            if (role, email) in seen:
                continue
            seen.add((role, email))
            msg.addresses.append(MessageAddress(role=role, email=email, name=name, inbox_id=inbox.id, date=date))
        db.session.add(msg)
        db.session.commit()
        return msg

    def received(self, inbox: Inbox, from_: Address, **kwargs) -> Message:
        return self.message(inbox, "in", from_, to=[inbox.email], **kwargs)

    def sent(self, inbox: Inbox, to: list[Address] | Address, **kwargs) -> Message:
        return self.message(inbox, "out", inbox.email, to=[to] if isinstance(to, str | tuple) else to, **kwargs)


def _split(address: Address) -> tuple[str, str]:
    if isinstance(address, tuple):
        return address[1].lower(), address[0]
    return address.lower(), ""
