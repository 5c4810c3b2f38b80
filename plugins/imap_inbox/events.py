"""The events imap_inbox emits, always after what they describe is committed.

* ``email_received``: per stored batch, the existing contacts who sent new inbound mail.
* ``email_sent``: per stored batch, the existing contacts new outbound mail was addressed to.

Other plugins hear about syncs and settings through the mail core's typed hooks
(``mailbox_synced``, ``mailbox_settings_changed``: plugins/mail/hookspecs.py), not through events.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from host_app.api import Contact, EventType, db, emit, member_of

log = logging.getLogger(__name__)

EMAIL_RECEIVED = "email_received"
EMAIL_SENT = "email_sent"

EVENT_TYPES = [
    EventType(EMAIL_RECEIVED, "E-mail received from a contact (IMAP inbox)"),
    EventType(EMAIL_SENT, "We sent an e-mail to the contact (IMAP inbox)"),
]


def contact_ids_for(emails: Iterable[str]) -> list[int]:
    """Ids of existing contacts with these (normalized) addresses."""
    wanted = sorted({e for e in emails if e})
    return list(db.session.scalars(db.select(Contact.id).where(member_of(Contact.email, wanted))))


def _emit(type_: str, key: str, contact_ids: Iterable[int], payload: dict[str, Any]) -> None:
    # Automations and listeners belong to others: their failure must not fail the sync.
    try:
        emit(type_, key, contact_ids, payload)
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("emitting %s (%s) failed", type_, key)


def emit_new_mail(*, inbox_id: int, folder_id: int, batch_key: str, senders: Iterable[str],
                  recipients: Iterable[str], initial: bool, last_sent: dict[str, datetime] | None = None) -> None:
    """Emit email_received / email_sent for one committed batch (only when a contact is concerned).

    ``email_sent`` carries ``occurred_at``: per contact, the date of our latest e-mail to them in the
    batch, so an automation that waits after it counts the responses from then on, not from when the
    sync saw the e-mail.
    """
    received = contact_ids_for(senders)
    if received:
        _emit(EMAIL_RECEIVED, f"imap:{batch_key}:in", received,
              {"inbox_id": inbox_id, "folder_id": folder_id, "initial_sync": initial})
    sent = contact_ids_for(recipients)
    if sent:
        payload = {"inbox_id": inbox_id, "folder_id": folder_id, "initial_sync": initial}
        if last_sent:
            emails = db.session.execute(db.select(Contact.id, Contact.email).where(Contact.id.in_(sent))).all()
            payload["occurred_at"] = {str(cid): last_sent[email].isoformat()
                                      for cid, email in emails if email in last_sent}
        _emit(EMAIL_SENT, f"imap:{batch_key}:out", sent, payload)
