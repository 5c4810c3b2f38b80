"""Opening watch connections: checked addresses, TLS as for a sync, gradually and within a cap per server.

Runs on the watcher's event loop, outside any app context: what the
configuration says (private hosts blocked or not) is read once at start and
handed in.
"""
from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..connection import (
    ConnectionSettings,
    _tls_context,
    classify_error,
    refuse_private_addresses,
)
from .idle_client import IdleClient


class ServerFull(Exception):
    """This watcher already holds as many connections to the server as it may (``cap``)."""

    def __init__(self, server: str, cap: int):
        super().__init__(server)
        self.server = server
        self.cap = cap


@dataclass
class OpeningLimits:
    per_second: float = 100.0  # new connections per second, all servers together
    handshakes_per_server: int = 10  # TLS handshakes and logins in flight to one server
    connections_per_server: int = 2000  # connections held open to one server


class Opener:
    """Hands out connections, pacing them so a thousand inboxes do not all knock at the same second."""

    def __init__(self, limits: OpeningLimits, block_private_hosts: bool, blocking: Callable | None = None):
        self.limits = limits
        self.block_private_hosts = block_private_hosts
        # How blocking calls (an OAuth 2.0 token refresh: HTTP, and the rotated refresh token stored) run:
        # ``await blocking(func)``; the watcher passes a thread with the app's context.
        self.blocking = blocking or asyncio.to_thread
        self._handshakes: dict[str, asyncio.Semaphore] = {}
        self._held: collections.Counter[str] = collections.Counter()
        self._next_slot = 0.0

    def held(self, host: str) -> int:
        return self._held[host.lower()]

    async def open(self, settings: ConnectionSettings) -> IdleClient:
        """A logged-in client; raises ServerFull, or ImapConnectError worded as for a sync."""
        server = settings.host.lower()
        if self._held[server] >= self.limits.connections_per_server:
            raise ServerFull(server, self.limits.connections_per_server)
        # The slot is taken before the first wait: connections opening at the same time count against the cap.
        self._held[server] += 1
        client = None
        try:
            await self._pace()
            gate = self._handshakes.setdefault(server, asyncio.Semaphore(self.limits.handshakes_per_server))
            async with gate:
                address = await self._checked_address(settings)
                client = await IdleClient.open(settings, address, _tls_context(settings))
                if settings.access_tokens is not None:
                    await client.login_oauth(settings, self.blocking)
                else:
                    await client.login(settings.username, settings.password)
        except BaseException as exc:
            self.release(settings)
            if client is not None:
                client.close()
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            raise classify_error(exc, settings) from None  # the cause may quote what was sent
        return client

    def release(self, settings: ConnectionSettings) -> None:
        server = settings.host.lower()
        self._held[server] = max(0, self._held[server] - 1)

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.limits.per_second
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _checked_address(self, settings: ConnectionSettings) -> str:
        infos = await asyncio.get_running_loop().getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if self.block_private_hosts:
            refuse_private_addresses(settings.host, addresses)
        return addresses[0]
