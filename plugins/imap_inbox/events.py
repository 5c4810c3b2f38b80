"""The events imap_inbox emits, always after what they describe is committed.

* ``email_received``: per stored batch, the existing contacts who sent new inbound mail.
* ``email_sent``: per stored batch, the existing contacts new outbound mail was addressed to.
* ``inbox_synced``: once per sync run (key = the run id), with ``{"inbox_id", "new_messages",
  "sync_run_id"}``; other plugins (contacts_import, reply_condition) listen to it.
* ``inbox_settings_changed``: after a change to an inbox is saved (its edit page, disable/enable,
  another plugin through ``service.update_inbox`` / ``set_enabled``), with ``{"inbox_id", "changed"}``:
  the sorted names of the settings that changed (``create_users``, ``username``, ``enabled``,
  ``password`` ..., never a value). contacts_import listens to it to read the whole mailbox again
  when Create users is switched on.

Events that name no contacts are not automation triggers; ``event_emitted`` listeners get them.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from host_app import events as host_events
from host_app.api import EventType
from host_app.extensions import db
from host_app.models import Contact
from host_app.sql import member_of

log = logging.getLogger(__name__)

EMAIL_RECEIVED = "email_received"
EMAIL_SENT = "email_sent"
INBOX_SYNCED = "inbox_synced"
INBOX_SETTINGS_CHANGED = "inbox_settings_changed"

EVENT_TYPES = [
    EventType(EMAIL_RECEIVED, "E-mail received from a contact (IMAP inbox)"),
    EventType(EMAIL_SENT, "E-mail sent to a contact (IMAP inbox)"),
    EventType(INBOX_SYNCED, "Connected inbox synced", trigger=False),  # names no contacts
    EventType(INBOX_SETTINGS_CHANGED, "Connected inbox settings changed", trigger=False),
]


def contact_ids_for(emails: Iterable[str]) -> list[int]:
    """Ids of existing contacts with these (normalized) addresses."""
    wanted = sorted({e for e in emails if e})
    return list(db.session.scalars(db.select(Contact.id).where(member_of(Contact.email, wanted))))


def _emit(type_: str, key: str, contact_ids: Iterable[int], payload: dict[str, Any]) -> None:
    # Automations and listeners belong to others: their failure must not fail the sync.
    try:
        host_events.emit(type_, key, contact_ids, payload)
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("emitting %s (%s) failed", type_, key)


def emit_new_mail(*, inbox_id: int, folder_id: int, batch_key: str, senders: Iterable[str],
                  recipients: Iterable[str], initial: bool) -> None:
    """Emit email_received / email_sent for one committed batch (only when a contact is concerned)."""
    received = contact_ids_for(senders)
    if received:
        _emit(EMAIL_RECEIVED, f"imap:{batch_key}:in", received,
              {"inbox_id": inbox_id, "folder_id": folder_id, "initial_sync": initial})
    sent = contact_ids_for(recipients)
    if sent:
        _emit(EMAIL_SENT, f"imap:{batch_key}:out", sent,
              {"inbox_id": inbox_id, "folder_id": folder_id, "initial_sync": initial})


def emit_inbox_synced(*, inbox_id: int, sync_run_id: int, new_messages: int, removed_messages: int,
                      status: str) -> None:
    _emit(INBOX_SYNCED, str(sync_run_id), (), {
        "inbox_id": inbox_id,
        "new_messages": new_messages,
        "sync_run_id": sync_run_id,
        "removed_messages": removed_messages,
        "status": status,
    })


def emit_inbox_settings_changed(*, inbox_id: int, changed: Iterable[str]) -> None:
    # Every save is its own occurrence, even when the same setting flips back and forth.
    _emit(INBOX_SETTINGS_CHANGED, f"{inbox_id}:{uuid.uuid4().hex}", (), {
        "inbox_id": inbox_id,
        "changed": sorted(changed),
    })
