"""The stored rows of one message, whatever transport read it: its ``mail_message`` row and its address rows.

A transport hands over what its server said about the message (the raw
header block, the received date, size and flags, a preview or the first
bytes of the body) and gets plain dicts back, ready for ``store.insert_messages``.
Plain values in, plain values out: rows can be built in a helper process.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from .headers import parse_headers
from .message_ids import dedup_key
from .models import ROLE_SENT
from .preview import clean_preview, preview_from_body

Row = dict[str, Any]
Rows = tuple[list[Row], list[list[Row]]]  # message rows, and each message's address rows
_TEXT_COLUMNS_WITHOUT_NUL = ("message_id", "dedup_key", "in_reply_to", "references", "preview", "list_id")


@dataclasses.dataclass(frozen=True, slots=True)
class RowContext:
    """What a row needs besides the message: plain values, so it can cross to a helper process."""

    inbox_id: int
    folder_id: int
    folder_role: str
    own_addresses: frozenset[str]
    now: datetime


def message_row(context: RowContext, uid: int, header: bytes, internal_date: datetime | None, size: int,
                flags: str, preview: str | None = None, body_start: bytes | None = None,
                complete: bool = True) -> tuple[Row, list[Row]]:
    """The ``mail_message`` row of one message and its ``mail_message_address`` rows.

    ``uid`` is the message's locator in its folder; ``preview`` the server's own
    preview text, and when it is missing or empty ``body_start``, the first bytes
    of the body, to make one from; ``complete`` is False when the server would not give the header.
    """
    parsed = parse_headers(header, internal_date)
    errors = parsed.errors
    if not complete:
        errors.insert(0, "the server could not give this message's headers")
    date = parsed.date or internal_date or context.now
    outgoing = context.folder_role == ROLE_SENT or parsed.from_email in context.own_addresses
    # A server's PREVIEW NIL or empty one falls back to the body's start, when the transport read it.
    preview = clean_preview(preview)
    if preview is None and body_start is not None:
        preview = preview_from_body(body_start, parsed.content_type_raw, parsed.transfer_encoding)
    row = {
        "inbox_id": context.inbox_id,
        "folder_id": context.folder_id,
        "uid": uid,
        "message_id": parsed.message_id,
        "dedup_key": dedup_key(parsed.message_id, parsed.from_email, date, parsed.subject, size),
        "direction": "out" if outgoing else "in",
        "subject": parsed.subject,
        "from_email": parsed.from_email,
        "from_name": parsed.from_name,
        "date": date,
        "internal_date": internal_date,
        "size": size,
        "flags": flags,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "auto_submitted": parsed.auto_submitted,
        "precedence": parsed.precedence,
        "list_id": parsed.list_id,
        "list_unsubscribe": parsed.list_unsubscribe,
        "x_autoreply": parsed.x_autoreply,
        "content_type": parsed.content_type,
        "automated": parsed.automated,
        "preview": preview,
        "parse_error": parsed.parse_error,
        "created_at": context.now,
    }
    for key in _TEXT_COLUMNS_WITHOUT_NUL:
        value = row[key]
        if value and "\x00" in value:  # PostgreSQL refuses NUL in text
            row[key] = value.replace("\x00", "")
    addresses = [
        {"role": role, "email": email, "name": name, "inbox_id": context.inbox_id, "date": date}
        for role, email, name in parsed.addresses
        # Only here is the direction known; RECIPIENT_ROLES (models.py) says why incoming Bcc is dropped.
        if outgoing or role != "bcc"
    ]
    return row, addresses
