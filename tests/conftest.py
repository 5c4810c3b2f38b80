"""Fixtures come from host_app.testing (the pytest plugin we ship for plugin authors); here only
what our own suite needs on top: the services it talks to."""
from __future__ import annotations

import pytest

from tests.services import ensure_postgres, ensure_redis


@pytest.fixture(scope="session", autouse=True)
def _services():
    """Start Redis (and PostgreSQL when the suite runs against it) if they are not running."""
    ensure_redis()
    ensure_postgres()
