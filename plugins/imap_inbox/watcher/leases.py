"""Sharing inboxes among watchers through Redis: live members, rendezvous hashing, and a lease per inbox.

* Every watcher heartbeats into a sorted set (member id -> time) about once a
  second; a member not heard from for ``member_ttl`` seconds is gone.
* Each inbox belongs to the live member with the highest hash of
  (member, inbox) (rendezvous hashing): a member joining or leaving moves
  only its own share.
* Owning is proven by a lease, a Redis key with a TTL set only if absent and
  renewed by its holder: never two watchers on one inbox. A killed watcher's
  leases are taken by the others once it is gone from the member set
  (``member_ttl``), or at the latest when they expire (``lease_ttl``); a live
  member's lease is never taken.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterable

from redis import Redis

_RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('EXPIRE', key, ARGV[2])
    renewed[#renewed + 1] = i
  end
end
return renewed
"""

# Take each lease that is free, ours, or held by a member gone from the member set (KEYS[1]; ARGV[3] is the
# oldest heartbeat of a live member): a SIGKILLed watcher's inboxes need not wait for its leases to expire.
_ACQUIRE = """
local taken = {}
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  local free = not holder or holder == ARGV[1]
  if not free then
    local seen = redis.call('ZSCORE', KEYS[1], holder)
    free = not seen or tonumber(seen) < tonumber(ARGV[3])
  end
  if free then
    redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2])
    taken[#taken + 1] = i - 1
  end
end
return taken
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_member_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def rendezvous_owner(inbox_id: int, members: Iterable[str]) -> str | None:
    best, best_score = None, b""
    for member in members:
        score = hashlib.blake2b(f"{member}|{inbox_id}".encode(), digest_size=8).digest()
        if best is None or score > best_score:
            best, best_score = member, score
    return best


class Leases:
    def __init__(self, redis: Redis, namespace: str, member_id: str, *, member_ttl: float = 6,
                 lease_ttl: int = 12):
        self.redis = redis
        self.namespace = namespace
        self.member_id = member_id
        self.member_ttl = member_ttl
        self.lease_ttl = lease_ttl
        self._renew = redis.register_script(_RENEW)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    @property
    def members_key(self) -> str:
        return f"{self.namespace}:members"

    def lease_key(self, inbox_id: int) -> str:
        return f"{self.namespace}:lease:{int(inbox_id)}"

    def heartbeat(self) -> list[str]:
        """Say we are alive; return the live members (us included), sorted."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.zadd(self.members_key, {self.member_id: now})
        pipe.zremrangebyscore(self.members_key, "-inf", now - self.member_ttl)
        pipe.zrange(self.members_key, 0, -1)
        members = pipe.execute()[2]
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def leave(self) -> None:
        self.redis.zrem(self.members_key, self.member_id)

    def acquire(self, inbox_ids: list[int]) -> list[int]:
        """Take the leases that are free (or whose holder is gone); returns the inboxes now ours."""
        taken: list[int] = []
        cutoff = time.time() - self.member_ttl
        for start in range(0, len(inbox_ids), 500):
            chunk = inbox_ids[start:start + 500]
            positions = self._acquire(keys=[self.members_key, *(self.lease_key(i) for i in chunk)],
                                      args=[self.member_id, self.lease_ttl, cutoff])
            taken.extend(chunk[int(position) - 1] for position in positions)
        return taken

    def renew(self, inbox_ids: list[int]) -> set[int]:
        """Extend our leases; returns the inboxes still ours (a lease that expired may be someone else's now)."""
        kept: set[int] = set()
        for start in range(0, len(inbox_ids), 500):
            chunk = inbox_ids[start:start + 500]
            renewed = self._renew(keys=[self.lease_key(i) for i in chunk], args=[self.member_id, self.lease_ttl])
            kept.update(chunk[int(position) - 1] for position in renewed)
        return kept

    def release(self, inbox_ids: Iterable[int]) -> None:
        for inbox_id in inbox_ids:
            self._release(keys=[self.lease_key(inbox_id)], args=[self.member_id])

    def holder(self, inbox_id: int) -> str | None:
        value = self.redis.get(self.lease_key(inbox_id))
        return value.decode() if isinstance(value, bytes) else value
