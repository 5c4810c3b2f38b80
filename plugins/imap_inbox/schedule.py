"""When inboxes sync: a fixed per-inbox phase within the interval, and backoff after failures."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import current_app

DEFAULT_INTERVAL = 3600
RETRY_FIRST = 60  # seconds before the first retry after a transient failure
WATCHDOG = 15 * 60  # a sync that died without a word is retried after this long


def utcnow() -> datetime:
    return datetime.now(UTC)


def sync_interval() -> int:
    return max(60, int(current_app.config.get("IMAP_SYNC_INTERVAL", DEFAULT_INTERVAL)))


def phase(inbox_id: int, interval: int) -> int:
    """A stable offset within the interval, spread by a multiplicative hash of the id."""
    return (inbox_id * 2654435761) % (2**32) % interval


def next_regular_sync(inbox_id: int, now: datetime | None = None, interval: int | None = None) -> datetime:
    """The inbox's next slot: its own phase in the interval, at least half an interval from now."""
    now = now or utcnow()
    interval = interval or sync_interval()
    epoch = int(now.timestamp())
    offset = phase(inbox_id, interval)
    slot = epoch - (epoch - offset) % interval  # the latest slot at or before now
    while slot < epoch + interval // 2:
        slot += interval
    return datetime.fromtimestamp(slot, UTC)


def retry_delay(failures: int, interval: int | None = None) -> int:
    """Exponential backoff after consecutive transient failures: 1, 2, 4 ... minutes, capped at the interval."""
    interval = interval or sync_interval()
    return int(min(interval, RETRY_FIRST * 2 ** max(0, failures - 1)))


def next_retry(failures: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=retry_delay(failures))
