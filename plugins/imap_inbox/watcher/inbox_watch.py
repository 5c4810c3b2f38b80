"""Watching one inbox: an IDLE connection on INBOX (read-only), kept alive, reconnected with backoff.

The Sent folder is followed on the same connection: pushed by NOTIFY (RFC 5465)
where the server offers it, else its STATUS is asked for each time IDLE is
renewed (every ``idle_seconds``, a few minutes). Either way, every sync the
INBOX starts syncs Sent too, so a reply we send also arrives with the next event.

What happens is told to two callbacks: ``on_change(inbox_id, why, state)`` when the inbox should sync
(new or expunged mail, or a (re)connect that may have missed some), and ``on_status(inbox_id, status)``
for the inbox list. A permanent failure (wrong password, bad certificate) is told once through
``on_status`` with mode "failed" and ends the watch: the inbox then needs an admin, not more logins.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..connection import ConnectionSettings, ImapConnectError
from .idle_client import CommandFailed, ImapClosed
from .opening import Opener, ServerFull

log = logging.getLogger(__name__)

LIVE = "live"
POLLING = "polling"
CONNECTING = "connecting"
RETRYING = "retrying"
FAILED = "failed"


@dataclass
class WatchTimings:
    # IDLE is ended, a NOOP answered and IDLE started again this often: well inside the 29 minutes after
    # which servers may drop an idle client (RFC 2177), and often enough that a connection that died
    # silently is noticed within a few minutes.
    idle_seconds: float = 240.0
    poll_seconds: float = 300.0  # a server without IDLE is checked this often
    retry_first: float = 5.0
    retry_max: float = 600.0


STABLE_SECONDS = 60.0  # a connection live this long counts as healthy again

ChangeCallback = Callable[[int, str, dict[str, int]], None]
StatusCallback = Callable[[int, dict[str, Any]], None]


class InboxWatch:
    def __init__(self, inbox_id: int, settings: ConnectionSettings, opener: Opener, timings: WatchTimings,
                 on_change: ChangeCallback, on_status: StatusCallback, sent_folder: str | None = None):
        self.inbox_id = inbox_id
        self.settings = settings
        self.sent_folder = sent_folder
        self._sent_pushed = False
        self.opener = opener
        self.timings = timings
        self.on_change = on_change
        self.on_status = on_status
        self.failures = 0
        self.last_event: float | None = None
        self._polled_because: dict[str, Any] = {}  # why the inbox is polled rather than watched ("reason"...)
        self._live_since: float | None = None

    async def run(self) -> None:
        while True:
            self._status(CONNECTING)
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except ImapConnectError as exc:
                if exc.permanent:
                    self._status(FAILED, reason=exc.message, hint=exc.hint, kind=exc.kind)
                    log.warning("inbox %s: watch stopped (%s): %s", self.inbox_id, exc.kind, exc.message)
                    return
                await self._back_off(exc.message)
            except ServerFull as full:
                # Polled meanwhile, and said so on the inbox list; after each poll a connection that freed
                # up is tried again, so the inbox goes live as soon as the server has room for it.
                if self._polled_because.get("reason") != "server_cap":
                    log.warning("inbox %s: %s watched connections to %s already, the most allowed "
                                "(IMAP_WATCH_MAX_PER_SERVER); polling it every %.0fs instead", self.inbox_id,
                                full.cap, full.server, self.timings.poll_seconds)
                self._status(POLLING, reason="server_cap", cap=full.cap)
                await self._poll_once()
            except (OSError, TimeoutError, ImapClosed, CommandFailed, EOFError) as exc:
                await self._back_off(_plain(exc))

    async def _watch_once(self) -> None:
        client = await self.opener.open(self.settings)
        try:
            state = await client.examine("INBOX")
            followed = await self._follow_sent(client, state)
            # Anything that arrived while no connection was watching is caught up by one sync when needed.
            self.on_change(self.inbox_id, "connected", state)
            if "IDLE" not in client.capabilities:
                self._status(POLLING, reason="no_idle")
                await client.logout()
                self.opener.release(self.settings)
                client = None
                await self._poll_forever()
                return
            self._live_since = time.monotonic()
            self._polled_because = {}
            self._status(LIVE)
            while True:
                await client.idle(self.timings.idle_seconds, self._changed)
                await client.noop(self._changed)  # answered in time, or the connection is dead: reconnect
                if followed and not client.follow_pushed:
                    await client.check_followed(followed, self._changed)
        finally:
            if client is not None:
                self.opener.release(self.settings)
                client.close()

    async def _follow_sent(self, client, state: dict[str, int]) -> str | None:
        """Follow the Sent folder; its state joins ``state`` as ``sent_*`` for the catch-up after connecting."""
        if not self.sent_folder:
            return None
        try:
            sent = await client.follow(self.sent_folder)
        except CommandFailed as exc:  # gone or renamed: INBOX is still watched; the next sync finds Sent again
            log.info("inbox %s: not following the Sent folder: %s", self.inbox_id, exc.text)
            return None
        self._sent_pushed = client.follow_pushed
        state.update({f"sent_{key}": value for key, value in sent.items()})
        return self.sent_folder

    def _changed(self, kind: bytes) -> None:
        self.last_event = time.time()
        self._status(LIVE)
        self.on_change(self.inbox_id, "sent" if kind == b"STATUS" else kind.decode().lower(), {})

    async def _poll_forever(self) -> None:
        while True:
            await self._poll_once()

    async def _poll_once(self) -> None:
        await asyncio.sleep(self.timings.poll_seconds * random.uniform(0.9, 1.1))
        self.last_event = time.time()
        self.on_change(self.inbox_id, "poll", {})
        self._status(POLLING, **self._polled_because)

    async def _back_off(self, why: str) -> None:
        # Only a connection that stayed up a while resets the backoff: a server that accepts and then drops
        # every connection is retried ever more slowly, not every few seconds.
        if self._live_since is not None and time.monotonic() - self._live_since >= STABLE_SECONDS:
            self.failures = 0
        self._live_since = None
        self.failures += 1
        delay = min(self.timings.retry_max, self.timings.retry_first * 2 ** (self.failures - 1))
        delay *= random.uniform(0.5, 1.0)  # full jitter would let some reconnect at once after an outage
        self._status(RETRYING, reason=why, retry_in=round(delay))
        log.info("inbox %s: watch connection failed (%s); retrying in %.0fs", self.inbox_id, why, delay)
        await asyncio.sleep(delay)

    def _status(self, mode: str, **details: Any) -> None:
        if mode == POLLING:
            self._polled_because = {key: details[key] for key in ("reason", "cap") if key in details}
            details["poll_seconds"] = self.timings.poll_seconds
        elif mode == LIVE and self.sent_folder:
            # How soon mail sent from other programs is seen: pushed, or at the next IDLE renewal.
            details["sent_seconds"] = 0 if self._sent_pushed else self.timings.idle_seconds
        self.on_status(self.inbox_id, {"mode": mode, "last_event": self.last_event, **details})


def _plain(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the server stopped answering"
    return str(exc) or type(exc).__name__
