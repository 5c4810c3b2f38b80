"""Fixtures come from host_app.testing (the pytest plugin we ship for plugin authors); here only
what our own suite needs on top: the services it talks to and a real Dovecot."""
from __future__ import annotations

import itertools

import pytest

from tests.support.imap_helpers import make_owner
from tests.support.mailbox import Mailbox
from tests.support.services import ensure_postgres, ensure_redis

_user_numbers = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def _services():
    """Start Redis (and PostgreSQL when the suite runs against it) if they are not running."""
    ensure_redis()
    ensure_postgres()


@pytest.fixture(scope="session")
def dovecot():
    """One real Dovecot for the session (TLS from a test CA, free loopback ports)."""
    from plugins.imap_inbox.testing.dovecot import DovecotServer

    with DovecotServer() as server:
        yield server


@pytest.fixture
def mailbox(dovecot) -> Mailbox:
    """A new, empty account (INBOX and Sent) so tests never see each other's mail."""
    n = next(_user_numbers)
    username = f"team{n}@team.example"
    password = f"pw-{n}-secret"
    dovecot.add_user(username, password)
    return Mailbox(dovecot, username, password)


@pytest.fixture
def owner(app) -> int:
    """The agent who owns the test inboxes; agents live in the database, which every app of a test shares."""
    return make_owner(app)
