"""The whole system under stress: security, reliability, injected faults, the bench, the demo, the Dovecot harness."""
from __future__ import annotations

import pytest

from tests.support.reliability_helpers import RedisServer


@pytest.fixture(scope="module")
def private_redis():
    """A redis-server of the module's own. RQ job ids ("imap_inbox-sync-<inbox id>") are global in a Redis
    database, so a suite on a shared one (each with its inbox #1) would take, or cancel, another's jobs."""
    server = RedisServer().start()
    yield server
    server.close()
