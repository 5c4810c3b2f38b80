"""How each inbox is watched, kept in Redis for the inbox list: live, polling, retrying, or not at all.

Watchers write one small JSON per inbox they hold; the page believes an entry
only while the watcher that wrote it is a live member (leases.py), so a
killed watcher's inboxes never show "Live".
"""
from __future__ import annotations

import json
import time
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError

from host_app.api import redis_connection

# Seconds without a heartbeat after which a watcher counts as gone, its inboxes are taken over and what it
# wrote is no longer believed. Watchers say they are alive every MEMBER_BEAT seconds, so five beats in a row
# must be missed (a stalled process, not merely a loaded machine) before a live watcher is taken for dead.
MEMBER_TTL = 6
MEMBER_BEAT = 1.0


def namespace() -> str:
    return f"imap_inbox:{current_app.config['RQ_QUEUE']}:watch"


def status_key(space: str) -> str:
    return f"{space}:status"


def write(redis: Redis, space: str, member_id: str, statuses: dict[int, dict[str, Any]]) -> None:
    if not statuses:
        return
    now = time.time()
    redis.hset(status_key(space), mapping={
        str(inbox_id): json.dumps({**status, "watcher": member_id, "at": now})
        for inbox_id, status in statuses.items()})


def forget(redis: Redis, space: str, inbox_ids: list[int]) -> None:
    if inbox_ids:
        redis.hdel(status_key(space), *[str(i) for i in inbox_ids])


def read(inbox_ids: list[int]) -> tuple[dict[int, dict[str, Any]], bool]:
    """({inbox id: status} written by live watchers, whether any watcher is running); empty without Redis."""
    space = namespace()
    try:
        redis = redis_connection()
        live = {m.decode() for m in redis.zrangebyscore(f"{space}:members", time.time() - MEMBER_TTL, "+inf")}
        raw = redis.hmget(status_key(space), [str(i) for i in inbox_ids]) if inbox_ids else []
    except RedisError:
        return {}, False
    found = {}
    for inbox_id, value in zip(inbox_ids, raw, strict=True):
        if value is None:
            continue
        status = json.loads(value)
        if status.get("watcher") in live:
            found[inbox_id] = status
    return found, bool(live)
