"""Turning a FETCH batch into the mail core's rows, in this process or beside it in a second one.

The rows themselves are the mail core's (``plugins/mail/rows.py``); this
module hands it what FETCH read and decides where that work runs. Parsing
headers is about a third of a large first sync's CPU. With a second process
building the rows of batch k+1 while this one writes batch k to the database
(and the server prepares batch k+2), a two-core machine does both at once.
Small syncs (the hourly incremental ones) build in-process: starting a
helper process would cost more than it saves.

The helper only computes: it gets plain values (no session, no connection) and
returns plain dicts, so it may die at any time without losing anything; the
sync then builds the remaining batches itself.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from plugins.mail.rows import RowContext, Rows, message_row

from .fetch import FetchedMessage

log = logging.getLogger(__name__)


def build_rows(context: RowContext, messages: Iterable[FetchedMessage]) -> Rows:
    """The mail core's rows of fetched ``messages``, newest (highest UID) first."""
    rows, address_rows = [], []
    for message in sorted(messages, key=lambda message: message.uid, reverse=True):
        row, addresses = message_row(context, message.uid, message.header, message.received_at(), message.size,
                                     message.flags, message.preview, message.text, message.complete)
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
            # ever computes (no connection, no lock of this process is touched in it). What it inherits
            # is frozen, as in a work horse (host_app.jobs.start_work_horse): its collections then walk
            # only the rows it builds.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                             initializer=gc.freeze)

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
