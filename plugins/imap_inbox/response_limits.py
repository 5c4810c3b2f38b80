"""How much, and for how long, an IMAP server may answer: the caps that keep a hostile server from the worker.

A server announces literal sizes itself (``{2000000000}``) and decides how long
its lines are and how many it sends; trusted, one answer could fill the worker's
memory, and a server dripping a byte at a time could hold a sync for as long as
the job timeout allows. Every byte imaplib, imapclient and the fast FETCH reader
(fetch.read_fetch_answer) read goes through :class:`BoundedReader`, which
enforces :class:`ResponseLimits`:

* ``literal_bytes``: one literal, refused before a byte of it is read;
* ``line_bytes``: one line;
* ``response_bytes``: everything read for one command (counted from its tag);
* ``command_seconds``: the wall time of one command, whatever the socket timeout;
* ``run_seconds``: the wall time of a whole sync run (it resumes from its checkpoint next time).

Past a cap the connection is shut down and :class:`ResponseLimitExceeded` is
raised; connection.classify_error turns it into a plain-words error for the inbox.
"""
from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ResponseLimits:
    """The caps; the defaults are far above what a sync of a real mailbox reads (see docs/security.md)."""

    # The sync fetches header blocks and short text previews: megabytes would already be odd.
    literal_bytes: int = 16 * MIB
    # UID SEARCH ALL of a folder with millions of messages is one line of a few tens of megabytes.
    line_bytes: int = 64 * MIB
    # One FETCH batch (IMAP_FETCH_BATCH messages' headers) is a few megabytes.
    response_bytes: int = 256 * MIB
    command_seconds: float = 600
    run_seconds: float = 4 * 3600  # the job timeout (6 h) must never be what stops a sync

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResponseLimits:
        """From IMAP_MAX_LITERAL_BYTES, IMAP_MAX_LINE_BYTES, IMAP_MAX_RESPONSE_BYTES, IMAP_COMMAND_SECONDS and
        IMAP_SYNC_SECONDS, each falling back to its default."""
        default = cls()
        names = {"literal_bytes": "IMAP_MAX_LITERAL_BYTES", "line_bytes": "IMAP_MAX_LINE_BYTES",
                 "response_bytes": "IMAP_MAX_RESPONSE_BYTES", "command_seconds": "IMAP_COMMAND_SECONDS",
                 "run_seconds": "IMAP_SYNC_SECONDS"}
        values = {}
        for field, key in names.items():
            kind = type(getattr(default, field))
            value = config.get(key)
            values[field] = kind(value) if value not in (None, "") else getattr(default, field)
            if values[field] <= 0:
                raise ValueError(f"{key} must be a positive number")
        return cls(**values)


class ResponseLimitExceeded(Exception):
    """The server sent more than a cap allows, or took longer; ``reason`` says which, in plain words."""

    def __init__(self, reason: str, *, too_slow: bool = False):
        self.reason = reason
        self.too_slow = too_slow
        super().__init__(reason)


class ResponseGuard:
    """The caps of one connection: bytes counted per command, deadlines watched by one thread.

    A read blocked on a server that sends nothing (or a byte now and then) cannot look at the clock, so
    the watchdog shuts the socket down at the deadline; the read then returns and the reader raises.
    """

    def __init__(self, limits: ResponseLimits, run_deadline: float | None = None):
        self.limits = limits
        self.run_deadline = run_deadline
        self.response_bytes = 0
        self.expired: str | None = None
        self.sock: socket.socket | None = None
        self._command_deadline: float | None = None
        self._condition = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start_command(self) -> None:
        """A new command: its byte count and its clock start now."""
        self.response_bytes = 0
        with self._condition:
            self._command_deadline = time.monotonic() + self.limits.command_seconds
            self._condition.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="imap-response-guard", daemon=True)
            self._thread.start()

    def count(self, size: int) -> None:
        self.response_bytes += size
        if self.response_bytes > self.limits.response_bytes:
            self.fail(f"one answer was larger than {_size(self.limits.response_bytes)}")

    def check_literal(self, size: int) -> None:
        if size > self.limits.literal_bytes:
            self.fail(f"it announced a block of {_size(size)}; at most {_size(self.limits.literal_bytes)} "
                      "is accepted")

    def check_line(self, line: bytes) -> None:
        if len(line) > self.limits.line_bytes:
            self.fail(f"one line was longer than {_size(self.limits.line_bytes)}")

    def check_clock(self) -> None:
        if self.expired:
            self.fail(self.expired, too_slow=True)

    def fail(self, reason: str, *, too_slow: bool = False):
        self.expired = self.expired or reason
        self._shut_socket()
        raise ResponseLimitExceeded(reason, too_slow=too_slow)

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _deadline(self) -> float | None:
        deadlines = [d for d in (self._command_deadline, self.run_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def _watch(self) -> None:
        with self._condition:
            while not self._stopped:
                deadline = self._deadline()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if self.run_deadline is not None and time.monotonic() >= self.run_deadline:
                        self.expired = f"the sync ran longer than its limit of {_duration(self.limits.run_seconds)}"
                    else:
                        self.expired = (f"it took longer than {_duration(self.limits.command_seconds)} "
                                        "to answer one command")
                    self._shut_socket()
                    return
                self._condition.wait(left)

    def _shut_socket(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class BoundedReader:
    """Stands in for imaplib's ``IMAP4.file``: the same readline/read, within the guard's caps."""

    def __init__(self, raw, guard: ResponseGuard):
        self._raw = raw
        self._guard = guard

    def readline(self, limit: int = -1) -> bytes:
        guard = self._guard
        cap = guard.limits.line_bytes + 1
        line = self._raw.readline(cap if limit is None or limit < 0 else min(limit, cap))
        if guard.expired:
            guard.check_clock()
        guard.check_line(line)
        guard.count(len(line))
        return line

    def read(self, size: int = -1) -> bytes:
        guard = self._guard
        guard.check_literal(size)
        guard.count(size)
        data = self._raw.read(size)
        if guard.expired:
            guard.check_clock()
        return data

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name):
        return getattr(self._raw, name)


def _size(count: int) -> str:
    if count >= MIB:
        return f"{count / MIB:g} MB"
    if count >= 1024:
        return f"{count / 1024:g} KB"
    return f"{count} bytes"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} seconds"
    return f"{round(seconds / 60)} minutes"
