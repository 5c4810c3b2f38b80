"""Login throttling: failed logins per account and per client address, counted in Redis.

Counted in Redis (the ``limits`` library's moving windows), so every web worker
sees the same counts. Each key has tiers of growing windows: a few failures
cost a minute, more cost a quarter of an hour, many cost the day. While a key
is over a tier, no password is checked for it at all, the right one included.
Successful logins count nothing; one clears the account's own counts.
"""
from __future__ import annotations

import logging
import math
import time

from flask import current_app
from limits import RateLimitItem, parse_many, storage, strategies
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Failures per e-mail address typed, and per client address (an office behind one NAT shares the second).
DEFAULT_ACCOUNT_LIMITS = "5 per minute; 10 per 15 minutes; 20 per hour; 50 per day"
DEFAULT_ADDRESS_LIMITS = "20 per minute; 50 per 15 minutes; 100 per hour; 300 per day"
NAMESPACE = "crm-login-failures"


class LoginThrottle:
    def __init__(self, redis_url: str, account_limits: str, address_limits: str):
        self.limiter = strategies.MovingWindowRateLimiter(storage.RedisStorage(redis_url))
        self.account_limits: list[RateLimitItem] = parse_many(account_limits)
        self.address_limits: list[RateLimitItem] = parse_many(address_limits)

    def _keys(self, account: str, address: str) -> list[tuple[RateLimitItem, str]]:
        return ([(limit, f"account:{account}") for limit in self.account_limits]
                + [(limit, f"address:{address}") for limit in self.address_limits])

    def wait_seconds(self, account: str, address: str) -> float:
        """How long this account and this client address must wait before the next try (0: go ahead)."""
        wait = 0.0
        now = time.time()
        for limit, key in self._keys(account, address):
            if not self.limiter.test(limit, NAMESPACE, key):
                reset = self.limiter.get_window_stats(limit, NAMESPACE, key).reset_time
                wait = max(wait, reset - now, 1.0)
        return wait

    def failed(self, account: str, address: str) -> None:
        for limit, key in self._keys(account, address):
            self.limiter.hit(limit, NAMESPACE, key)

    def succeeded(self, account: str) -> None:
        for limit in self.account_limits:
            self.limiter.clear(limit, NAMESPACE, f"account:{account}")


def throttle() -> LoginThrottle:
    app = current_app
    found = app.extensions.get("login_throttle")
    if found is None:
        found = app.extensions["login_throttle"] = LoginThrottle(
            app.config["REDIS_URL"],
            app.config.get("LOGIN_ACCOUNT_LIMITS") or DEFAULT_ACCOUNT_LIMITS,
            app.config.get("LOGIN_ADDRESS_LIMITS") or DEFAULT_ADDRESS_LIMITS,
        )
    return found


def wait_message(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many attempts. Try again in {minutes} minute{'' if minutes == 1 else 's'}."


def guarded(call, *args, default=None):
    """Run a throttle call; with Redis unreachable, log it and go on without throttling.

    Logging in must not depend on Redis being up (the whole team would be locked out); the error log says
    the protection is off meanwhile.
    """
    try:
        return call(*args)
    except RedisError as exc:
        log.error("login throttling is off: Redis is unreachable (%s)", type(exc).__name__)
        return default
