"""Fixtures come from host_app.testing (the pytest plugin we ship for plugin authors); here only
what our own suite needs on top: the services it talks to and a real Dovecot."""
from __future__ import annotations

import itertools
import os

import pytest

from host_app.testing import _create_postgres_database, _drop_postgres_database
from tests.support.imap_helpers import make_owner
from tests.support.mailbox import Mailbox
from tests.support.services import ensure_postgres, ensure_redis

_user_numbers = itertools.count(1)

# Every fixture that reaches the database server leads here (crm_database_url and crm_app_factory, so
# app, client, admin, ... too): a test whose fixtures do not include it cannot tell SQLite from PostgreSQL.
DIALECT_FIXTURE = "crm_database_server_url"


@pytest.hookimpl(tryfirst=True)  # before -m reads the markers set here
def pytest_collection_modifyitems(config, items):
    """Mark the tests that never reach the database ``dialect_independent`` (the PostgreSQL pass of
    ``make test`` leaves them out: the SQLite pass has run them), and deselect ``postgresql_only`` tests
    when the suite runs on SQLite, where they cannot run, instead of reporting them as skipped."""
    on_postgresql = bool(os.environ.get("TEST_DATABASE_URL"))
    selected, deselected = [], []
    for item in items:
        reaches_database = DIALECT_FIXTURE in item.fixturenames
        if not reaches_database:
            item.add_marker(pytest.mark.dialect_independent)
        if item.get_closest_marker("postgresql_only"):
            if not reaches_database:
                raise pytest.UsageError(f"{item.nodeid} is postgresql_only but uses no database fixture")
            if not on_postgresql:
                deselected.append(item)
                continue
        selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    # The longest modules first, then the folders holding minute-long tests (a stable sort: modules stay
    # whole, in their order), so pytest-xdist hands those out while the many short tests can still fill the
    # other workers, and no long module starts near the end and runs on alone.
    items[:] = sorted(selected, key=_rank)


# Modules that took two minutes or more of one worker in a `make test` on a loaded machine (2026-12-04,
# --durations), longest first: started last, any of them would set when its pass ends.
SLOWEST_MODULES_FIRST = (
    "system/test_faults.py",
    "system/test_security.py",
    "system/test_reliability.py",
    "imap_inbox/test_imap_watcher.py",
    "contacts_import/test_contacts_import_e2e.py",
    "contacts_import/test_contacts_import.py",
    "browser/test_every_page.py",
    "browser/test_oauth_story.py",
    "imap_inbox/test_imap_ui.py",
    "system/test_bench_smoke.py",
    "browser/test_automation_follow_up.py",
)
SLOW_FOLDERS_FIRST = ("system", "browser")


def _rank(item) -> int:
    module = f"{item.path.parent.name}/{item.path.name}"
    if module in SLOWEST_MODULES_FIRST:
        return SLOWEST_MODULES_FIRST.index(module)
    folder = item.path.parent.name
    rank = SLOW_FOLDERS_FIRST.index(folder) if folder in SLOW_FOLDERS_FIRST else len(SLOW_FOLDERS_FIRST)
    return len(SLOWEST_MODULES_FIRST) + rank


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


# Seconds an access token of the test provider lives: short, so expiry happens inside a test.
OAUTH_ACCESS_TOKEN_TTL = 5


@pytest.fixture(scope="session")
def oidc_provider():
    """A real OpenID Connect provider (oidc-provider from npm) over HTTPS on loopback; see oauth_server.py."""
    from tests.support.oauth_server import OidcProvider

    # The second redirect URI is where Flask's test client says the CRM's callback is.
    redirect_uris = ["http://127.0.0.1/callback", "http://localhost/settings/inboxes/oauth/callback"]
    with OidcProvider(access_token_ttl=OAUTH_ACCESS_TOKEN_TTL, redirect_uris=redirect_uris) as provider:
        yield provider


@pytest.fixture(scope="session")
def oauth_dovecot(oidc_provider):
    """A real Dovecot taking XOAUTH2 and OAUTHBEARER, asking ``oidc_provider`` about each token."""
    from plugins.imap_inbox.testing.dovecot import DovecotServer

    with DovecotServer(oauth2_introspection_url=oidc_provider.introspection_url,
                       oauth2_ca_file=oidc_provider.ca_file) as server:
        yield server


@pytest.fixture
def oauth_mailbox(oauth_dovecot, oidc_provider) -> Mailbox:
    """A new, empty account on ``oauth_dovecot`` whose owner has signed in at ``oidc_provider``:
    ``tokens`` is the provider's token response (access, refresh and id token)."""
    n = next(_user_numbers)
    username = f"oauth{n}@team.example"
    oauth_dovecot.add_user(username, f"pw-{n}-unused")
    return Mailbox(oauth_dovecot, username, "", tokens=oidc_provider.sign_in(username))


@pytest.fixture
def owner(app) -> int:
    """The agent who owns the test inboxes; agents live in the database, which every app of a test shares."""
    return make_owner(app)


@pytest.fixture
def empty_database_url(crm_database_server_url, tmp_path):
    """A database with no tables at all (SQLite file, or a new PostgreSQL database)."""
    server = crm_database_server_url
    if not server:
        yield f"sqlite:///{tmp_path}/fresh.sqlite"
        return
    url = _create_postgres_database(server)
    yield url
    _drop_postgres_database(server, url)
