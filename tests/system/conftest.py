"""The whole system under stress: security, reliability, injected faults, the bench, the demo, the Dovecot harness."""
from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet
from redis import Redis

from tests.support.reliability_helpers import RedisServer

# One key for every app a test makes: the worker and scheduler processes must read what the test's app stored.
ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def private_redis():
    """A redis-server of the module's own. RQ job ids ("imap_inbox-sync-<inbox id>") are global in a Redis
    database, so a suite on a shared one (each with its inbox #1) would take, or cancel, another's jobs."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def make_app(crm_app_factory, private_redis, request):
    """``make(**config)``: the app on the test database and the module's private Redis (emptied first), all
    sharing one encryption key, on an RQ queue of the test's own (named after its module)."""
    Redis.from_url(private_redis.url()).flushdb()
    queue_prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")

    def make(**config):
        values = dict(IMAP_ENCRYPTION_KEYS=ENCRYPTION_KEY, RQ_QUEUE=f"{queue_prefix}-{uuid.uuid4().hex[:8]}",
                      REDIS_URL=private_redis.url())
        values.update(config)
        return crm_app_factory(**values)

    return make
