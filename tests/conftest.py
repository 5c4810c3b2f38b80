"""Fixtures come from host_app.testing (the pytest plugin we ship for plugin authors); here only
what our own suite needs on top: the services it talks to and a real Dovecot."""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from tests.services import ensure_postgres, ensure_redis

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


@dataclasses.dataclass
class Mailbox:
    """A fresh mail account on the session's Dovecot, for one test."""

    server: object
    username: str
    password: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.imaps_port

    @property
    def ca_file(self) -> str:
        return self.server.ca_file

    def append(self, folder: str, raw: bytes, **kwargs):
        return self.server.append(self.username, folder, raw, **kwargs)

    def write(self, folder: str, messages: list[bytes]):
        return self.server.write_maildir(self.username, folder, messages)

    def client(self):
        return self.server.client(self.username, self.password)


@pytest.fixture
def mailbox(dovecot) -> Mailbox:
    """A new, empty account (INBOX and Sent) so tests never see each other's mail."""
    n = next(_user_numbers)
    username = f"team{n}@team.example"
    password = f"pw-{n}-secret"
    dovecot.add_user(username, password)
    return Mailbox(dovecot, username, password)
