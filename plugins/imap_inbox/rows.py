"""Turning a FETCH batch into the mail core's rows, in this process or beside it in a second one.

The rows themselves are the mail core's (``plugins/mail/rows.py``); this
module hands it what FETCH read and decides where that work runs. Parsing
headers is about a third of a large first sync's CPU. With a second process
building the rows of batch k+1 while this one writes batch k to the database
(and the server prepares batch k+2), a two-core machine does both at once.
Small syncs (the hourly incremental ones) build in-process: starting a
helper process would cost more than it saves.

The helper also prepares the rows for the database (``store.prepare_rows``:
sorted, flat, dates formatted for SQLite), so the sync's process only
executes the inserts, and hands back the little the sync announces of each
message instead of the rows themselves (``BuiltBatch``).

The helper only computes: it gets plain values (no session, no connection) and
returns plain values, so it may die at any time without losing anything; the
sync then builds the remaining batches itself.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import NamedTuple

from plugins.mail.models import RECIPIENT_ROLES
from plugins.mail.rows import RowContext, Rows, message_row
from plugins.mail.store import PreparedRows, prepare_rows

from .fetch import FetchedMessage

log = logging.getLogger(__name__)


class StoredMail(NamedTuple):
    """What the sync announces of a stored message (``FolderSync._new_mail``)."""

    uid: int
    direction: str
    from_email: str | None
    date: datetime | None
    recipients: tuple[str, ...]  # To, Cc and Bcc of our outgoing mail; none for incoming


@dataclasses.dataclass(slots=True)
class BuiltBatch:
    """A FETCH batch ready to store: its rows prepared for the database, and what is announced of each message."""

    prepared: PreparedRows
    mail: list[StoredMail]
    parse_errors: int


def batch_of(rows: list, address_rows: list, dialect: str) -> BuiltBatch:
    """The :class:`BuiltBatch` of the mail core's rows, for a database of ``dialect``."""
    mail = [
        StoredMail(row["uid"], row["direction"], row["from_email"], row["date"],
                   tuple(a["email"] for a in addresses if a["role"] in RECIPIENT_ROLES)
                   if row["direction"] == "out" else ())
        for row, addresses in zip(rows, address_rows, strict=True)
    ]
    return BuiltBatch(prepare_rows(rows, address_rows, dialect), mail, sum(1 for row in rows if row["parse_error"]))


def build_rows(context: RowContext, messages: Iterable[FetchedMessage]) -> Rows:
    """The mail core's rows of fetched ``messages``, newest (highest UID) first."""
    rows, address_rows = [], []
    for message in sorted(messages, key=lambda message: message.uid, reverse=True):
        row, addresses = message_row(context, message.uid, message.header, message.received_at(), message.size,
                                     message.flags, message.preview, message.text, message.complete)
        rows.append(row)
        address_rows.append(addresses)
    return rows, address_rows


def build_batch(context: RowContext, messages: Iterable[FetchedMessage], dialect: str) -> BuiltBatch:
    """The :class:`BuiltBatch` of fetched ``messages``, newest (highest UID) first."""
    return batch_of(*build_rows(context, messages), dialect)


class _Built:
    """A batch built in this process, when asked for."""

    def __init__(self, context: RowContext, messages: list[FetchedMessage], dialect: str):
        self._context, self._messages, self._dialect = context, messages, dialect

    def result(self) -> BuiltBatch:
        return build_batch(self._context, self._messages, self._dialect)

    def rows(self) -> Rows:
        """The batch's rows themselves, built in this process (for a batch the sync must edit first)."""
        return build_rows(self._context, self._messages)


class RowBuilder:
    """Builds each batch for a database of ``dialect``, in a helper process when ``parallel``; use as a context
    manager."""

    def __init__(self, parallel: bool, dialect: str):
        self._dialect = dialect
        self._pool: ProcessPoolExecutor | None = None
        if parallel and "fork" in multiprocessing.get_all_start_methods():
            # fork: the helper starts in milliseconds with the parser already imported, and only
            # ever computes (no connection, no lock of this process is touched in it). What it inherits
            # is frozen, as in a work horse (host_app.jobs.start_work_horse): its collections then walk
            # only the rows it builds.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                             initializer=gc.freeze)

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def submit(self, context: RowContext, messages: dict[int, FetchedMessage]) -> _Guarded | _Built:
        """Start building; ``.result()`` of the answer gives the :class:`BuiltBatch`, ``.rows()`` the rows."""
        batch = list(messages.values())
        if self._pool is not None:
            try:
                future = self._pool.submit(build_batch, context, batch, self._dialect)
                return _Guarded(self, future, context, batch, self._dialect)
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                self._give_up(exc)
        return _Built(context, batch, self._dialect)

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


class _Guarded(_Built):
    """A batch sent to the helper; if the helper dies, it is built here instead."""

    def __init__(self, builder: RowBuilder, future: Future, context: RowContext, batch: list[FetchedMessage],
                 dialect: str):
        super().__init__(context, batch, dialect)
        self._builder, self._future = builder, future

    def result(self) -> BuiltBatch:
        try:
            return self._future.result()
        except (BrokenProcessPool, OSError) as exc:
            self._builder._give_up(exc)
            return super().result()
