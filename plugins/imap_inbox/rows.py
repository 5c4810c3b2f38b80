"""Turning fetched messages into table rows, in this process or beside it in a second one.

Parsing headers is about a third of a large first sync's CPU. With a second
process building the rows of batch k+1 while this one writes batch k to the
database (and the server prepares batch k+2), a two-core machine does both at
once. Small syncs (the hourly incremental ones) build in-process: starting a
helper process would cost more than it saves.

The helper only computes: it gets plain values (no session, no connection) and
returns plain dicts, so it may die at any time without losing anything; the
sync then builds the remaining batches itself.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from plugins.mail.headers import parse_headers
from plugins.mail.message_ids import dedup_key
from plugins.mail.models import ROLE_SENT
from plugins.mail.preview import clean_preview, preview_from_body

from .fetch import FetchedMessage

log = logging.getLogger(__name__)

Row = dict[str, Any]
Rows = tuple[list[Row], list[list[Row]]]  # message rows, and each message's address rows
_TEXT_COLUMNS_WITHOUT_NUL = ("message_id", "dedup_key", "in_reply_to", "references", "preview", "list_id")


@dataclasses.dataclass(frozen=True, slots=True)
class RowContext:
    """What a row needs besides the message: plain values, so it can cross to the helper process."""

    inbox_id: int
    folder_id: int
    folder_role: str
    own_addresses: frozenset[str]
    now: datetime


def message_row(context: RowContext, message: FetchedMessage) -> tuple[Row, list[Row]]:
    """The ``mail_message`` row of one fetched message and its ``mail_message_address`` rows."""
    parsed = parse_headers(message.header, message.internal_date)
    errors = parsed.errors
    if not message.complete:
        errors.insert(0, "the server could not give this message's headers")
    date = parsed.date or message.internal_date or context.now
    outgoing = context.folder_role == ROLE_SENT or parsed.from_email in context.own_addresses
    if message.preview is not None:
        preview = clean_preview(message.preview)
    elif message.text is not None:
        preview = preview_from_body(message.text, parsed.content_type_raw, parsed.transfer_encoding)
    else:
        preview = None
    row = {
        "inbox_id": context.inbox_id,
        "folder_id": context.folder_id,
        "uid": message.uid,
        "message_id": parsed.message_id,
        "dedup_key": dedup_key(parsed.message_id, parsed.from_email, date, parsed.subject, message.size),
        "direction": "out" if outgoing else "in",
        "subject": parsed.subject,
        "from_email": parsed.from_email,
        "from_name": parsed.from_name,
        "date": date,
        "internal_date": message.internal_date,
        "size": message.size,
        "flags": message.flags,
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
        # Only here is the direction known; RECIPIENT_ROLES (plugins/mail/models.py) says why incoming Bcc is dropped.
        if outgoing or role != "bcc"
    ]
    return row, addresses


def build_rows(context: RowContext, messages: Iterable[FetchedMessage]) -> Rows:
    """Rows of ``messages``, newest (highest UID) first."""
    rows: list[Row] = []
    address_rows: list[list[Row]] = []
    for message in sorted(messages, key=lambda m: m.uid, reverse=True):
        row, addresses = message_row(context, message)
        rows.append(row)
        address_rows.append(addresses)
    return rows, address_rows


class _Built:
    """Rows built in this process, when asked for."""

    def __init__(self, context: RowContext, messages: list[FetchedMessage]):
        self._context, self._messages = context, messages

    def result(self) -> Rows:
        return build_rows(self._context, self._messages)


class RowBuilder:
    """Builds the rows of each batch, in a helper process when ``parallel``; use as a context manager."""

    def __init__(self, parallel: bool):
        self._pool: ProcessPoolExecutor | None = None
        if parallel and "fork" in multiprocessing.get_all_start_methods():
            # fork: the helper starts in milliseconds with the parser already imported, and only
            # ever computes (no connection, no lock of this process is touched in it).
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def submit(self, context: RowContext, messages: dict[int, FetchedMessage]) -> Future | _Built:
        """Start building; ``.result()`` of the answer gives the rows."""
        batch = list(messages.values())
        if self._pool is not None:
            try:
                return _Guarded(self, self._pool.submit(build_rows, context, batch), context, batch)
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                self._give_up(exc)
        return _Built(context, batch)

    def _give_up(self, exc: BaseException) -> None:
        log.warning("the row-building helper process failed (%s); building rows in the sync's process",
                    type(exc).__name__)
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> RowBuilder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Guarded:
    """A batch sent to the helper; if the helper dies, the rows are built here instead."""

    def __init__(self, builder: RowBuilder, future: Future, context: RowContext, batch: list[FetchedMessage]):
        self._builder, self._future, self._context, self._batch = builder, future, context, batch

    def result(self) -> Rows:
        try:
            return self._future.result()
        except (BrokenProcessPool, OSError) as exc:
            self._builder._give_up(exc)
            return build_rows(self._context, self._batch)
