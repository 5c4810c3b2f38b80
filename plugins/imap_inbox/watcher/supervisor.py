"""The watcher process (``manage.py watch``): one event loop holding an IDLE connection per inbox it owns.

Every ``heartbeat`` seconds it reads the inboxes to watch, says it is alive,
works out its share (leases.py), stops the watches no longer its own (or whose
settings changed), renews its leases and starts watches on the inboxes it
could lease. Between cycles it says it is alive every second (MEMBER_BEAT) and
runs a cycle at once when a watcher joined or left, and a second after one
that left some of its share to lease later, so a killed watcher's inboxes are
taken over a few seconds after it is gone, not a lease TTL later. The database
and Redis are only touched from threads, never on the event loop, so a slow
query cannot stall a thousand connections.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from flask import Flask

from host_app.api import db, redis_connection

from ..connection import ConnectionSettings, ImapConnectError, _block_private_hosts
from . import inventory, memory, watch_status
from .idle_client import use_small_tls_buffers
from .inbox_watch import FAILED, InboxWatch, WatchTimings
from .leases import Leases, new_member_id, rendezvous_owner
from .opening import Opener, OpeningLimits
from .sync_trigger import SyncTrigger

log = logging.getLogger(__name__)

STATUS_FLUSH_SECONDS = 1.0


@dataclass
class WatcherSettings:
    heartbeat: float = 3.0
    lease_ttl: int = 12
    member_ttl: float = watch_status.MEMBER_TTL
    member_beat: float = watch_status.MEMBER_BEAT
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: dict) -> tuple[WatcherSettings, WatchTimings, OpeningLimits]:
        heartbeat = float(config.get("IMAP_WATCH_HEARTBEAT", 3))
        settings = cls(heartbeat=heartbeat, member_beat=min(watch_status.MEMBER_BEAT, heartbeat),
                       lease_ttl=int(config.get("IMAP_WATCH_LEASE_TTL", 12)),
                       timeout=float(config.get("IMAP_TIMEOUT", 30)))
        timings = WatchTimings(idle_seconds=float(config.get("IMAP_WATCH_IDLE_SECONDS", 240)),
                               poll_seconds=float(config.get("IMAP_WATCH_POLL_SECONDS", 300)),
                               retry_first=float(config.get("IMAP_WATCH_RETRY_FIRST", 5)),
                               retry_max=float(config.get("IMAP_WATCH_RETRY_MAX", 600)))
        limits = OpeningLimits(per_second=float(config.get("IMAP_WATCH_OPEN_PER_SECOND", 100)),
                               connections_per_server=int(config.get("IMAP_WATCH_MAX_PER_SERVER", 2000)))
        return settings, timings, limits


@dataclass
class _Running:
    task: asyncio.Task
    watch: InboxWatch
    fingerprint: str


class Watcher:
    def __init__(self, app: Flask, member_id: str | None = None):
        self.app = app
        self.settings, self.timings, limits = WatcherSettings.from_config(app.config)
        with app.app_context():
            self.namespace = watch_status.namespace()
            self.redis = redis_connection()
            self.opener = Opener(limits, block_private_hosts=_block_private_hosts(), blocking=self._in_app)
        self.member_id = member_id or new_member_id()
        self.leases = Leases(self.redis, self.namespace, self.member_id, member_ttl=self.settings.member_ttl,
                             lease_ttl=self.settings.lease_ttl)
        self.trigger = SyncTrigger(app)
        self.running: dict[int, _Running] = {}
        self.failed: dict[int, str] = {}  # inbox id -> fingerprint that was refused: not retried until it changes
        self._statuses: dict[int, dict[str, Any]] = {}  # changed since the last write to Redis
        self._last_status: dict[int, dict[str, Any]] = {}
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None  # set to run the next cycle now (membership changed, or stop)
        self._members: list[str] = []

    def run(self) -> None:
        use_small_tls_buffers()
        asyncio.run(self.main())

    async def main(self) -> None:
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.trigger.start()
        flusher = asyncio.create_task(self._flush_statuses_forever(), name="watch-status-flusher")
        beater = asyncio.create_task(self._beat_forever(), name="watch-member-beat")
        log.info("watcher %s started", self.member_id)
        try:
            while not self._stopping.is_set():
                pending = False
                try:
                    pending = await self.cycle()
                except Exception:  # noqa: BLE001 - Redis or the database away: keep the watches, try again
                    log.warning("watcher cycle failed; retrying", exc_info=True)
                await asyncio.to_thread(memory.give_back_free_memory)
                # Some of our share was still leased by another watcher (it is handing it over, or its leases
                # are about to be taken): look again in a beat rather than a heartbeat.
                wait = self.settings.member_beat if pending else self.settings.heartbeat
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
        finally:
            flusher.cancel()
            beater.cancel()
            await self._shutdown()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
            self._wake.set()

    async def cycle(self) -> bool:
        """One round; returns whether some of our share could not be leased yet."""
        wanted = await self._in_app(inventory.watchable)
        members = self._members = await asyncio.to_thread(self.leases.heartbeat)
        mine = {i for i in wanted if rendezvous_owner(i, members) == self.member_id}
        for inbox_id in [i for i in self.failed if i not in wanted]:
            del self.failed[inbox_id]  # needs attention now (or deleted): once saved again, watch again

        ended = [i for i, r in self.running.items()
                 if i not in mine or wanted[i] != r.fingerprint or r.task.done()]
        for inbox_id in ended:
            await self._end(inbox_id)
        if ended:
            await asyncio.to_thread(self.leases.release, ended)

        kept = await asyncio.to_thread(self.leases.renew, list(self.running))
        for inbox_id in [i for i in self.running if i not in kept]:
            log.warning("inbox %s: lease lost; another watcher has it now", inbox_id)
            await self._end(inbox_id)

        candidates = sorted(i for i in mine if i not in self.running and self.failed.get(i) != wanted[i])
        acquired = await asyncio.to_thread(self.leases.acquire, candidates)
        if acquired:
            found = await self._in_app(inventory.connection_settings, acquired, self.settings.timeout)
            sent = await self._in_app(inventory.sent_folders)
            for inbox_id in acquired:
                if inbox_id in found:
                    self._start(inbox_id, found[inbox_id], wanted[inbox_id], sent.get(inbox_id))
            gone = [i for i in acquired if i not in found]
            if gone:
                await asyncio.to_thread(self.leases.release, gone)
        return len(acquired) < len(candidates)

    async def _beat_forever(self) -> None:
        """Say we are alive every beat; a watcher joining or leaving runs the next cycle at once."""
        while True:
            await asyncio.sleep(self.settings.member_beat)
            try:
                members = await asyncio.to_thread(self.leases.heartbeat)
            except Exception:  # noqa: BLE001 - Redis away: the cycle says so and retries
                continue
            if members != self._members:
                self._members = members
                self._wake.set()

    async def _flush_statuses_forever(self) -> None:
        """Status changes reach the inbox list within a second (the heartbeat refreshes them too)."""
        while True:
            await asyncio.sleep(STATUS_FLUSH_SECONDS)
            statuses, self._statuses = self._statuses, {}
            try:
                await asyncio.to_thread(watch_status.write, self.redis, self.namespace, self.member_id, statuses)
            except Exception:  # noqa: BLE001 - Redis away: written with the next change
                log.warning("could not write watch statuses", exc_info=True)
                self._statuses = {**statuses, **self._statuses}

    def _start(self, inbox_id: int, settings: ConnectionSettings, fingerprint: str, sent_folder: str | None) -> None:
        watch = InboxWatch(inbox_id, settings, self.opener, self.timings, self.trigger.changed, self._status,
                           sent_folder=sent_folder)
        task = asyncio.create_task(watch.run(), name=f"watch-inbox-{inbox_id}")
        self.running[inbox_id] = _Running(task, watch, fingerprint)

    async def _end(self, inbox_id: int) -> None:
        running = self.running.pop(inbox_id)
        if running.task.done():
            if not running.task.cancelled() and running.task.exception() is not None:
                log.error("inbox %s: watch crashed", inbox_id, exc_info=running.task.exception())
            status = self._last_status.get(inbox_id, {})
            if status.get("mode") == FAILED:
                self.failed[inbox_id] = running.fingerprint
                error = ImapConnectError(status.get("kind") or "server_error", status.get("reason") or "",
                                         status.get("hint") or "", permanent=True)
                await self._in_app(inventory.mark_needs_attention, inbox_id, error)
        else:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        self._statuses.pop(inbox_id, None)
        self._last_status.pop(inbox_id, None)

    def _status(self, inbox_id: int, status: dict[str, Any]) -> None:
        self._statuses[inbox_id] = status
        self._last_status[inbox_id] = status

    async def _shutdown(self) -> None:
        ids = list(self.running)
        for inbox_id in ids:
            task = self.running.pop(inbox_id).task
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await asyncio.to_thread(self.leases.release, ids)
            await asyncio.to_thread(watch_status.forget, self.redis, self.namespace, ids)
            await asyncio.to_thread(self.leases.leave)
        except Exception:  # noqa: BLE001 - Redis away: the leases expire on their own
            log.warning("could not hand back the leases; they expire on their own", exc_info=True)
        await asyncio.to_thread(self.trigger.stop)
        log.info("watcher %s stopped", self.member_id)

    async def _in_app(self, func, *args):
        def call():
            with self.app.app_context():
                try:
                    return func(*args)
                finally:
                    db.session.remove()
        return await asyncio.to_thread(call)
