"""Pytest fixtures for the host and for plugin authors (loaded as a pytest plugin, ``-p host_app.testing``).

A plugin's test suite gets a migrated database, Redis and a logged-in client::

    def test_my_condition(crm_app_factory):
        app = crm_app_factory(plugins={"my_plugin": "my_plugin"})
        with app.app_context():
            ...

Fixtures:

* ``crm_database_url``: a migrated database for the session. SQLite by
  default; PostgreSQL when ``TEST_DATABASE_URL`` is set (a database of its own is
  created on that server and dropped at the end).
* ``crm_database_server_url``: ``TEST_DATABASE_URL`` (the PostgreSQL server) or None;
  a test that makes databases of its own asks for it, which also marks it as one
  that depends on the database dialect.
* ``crm_app_factory(**config)``: builds apps on that database, emptied
  before each test. ``plugins={name: module}`` replaces entry-point discovery;
  ``disabled=[...]`` disables plugins.
* ``app``, ``client``, ``runner``: the flaskr trio, with every installed plugin.
* ``admin``/``agent``: agents; ``admin_client``/``agent_client``: logged in.
* ``redis_url``: a Redis database emptied before each test.

Helpers: ``make_agent``, ``log_in``, and ``run_jobs(app)``, which runs the
app's queued jobs on a real RQ worker in the test's process (the jobs those
enqueue too, such as the follow-ups of a mail sync), as ``manage.py worker``
would.

Under pytest-xdist every worker is a session of its own: its own migrated database, and
its own Redis database, ``TEST_REDIS_URL``'s number plus the worker's index (gw0 uses
that number, gw1 the next, ...), so workers never flush each other's jobs. A second suite
running beside the first on the same Redis sets ``TEST_REDIS_PASS=2`` and takes the
databases next to the first one's (``make test`` does this for its PostgreSQL pass).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.security import generate_password_hash

from . import create_app, migrating, models
from .extensions import db
from .jobs import make_worker

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
ADMIN_PASSWORD = "admin-password-1"
AGENT_PASSWORD = "agent-password-1"


def xdist_worker_index() -> int:
    """0 outside pytest-xdist, else the worker's number (``gw3`` is 3)."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def xdist_worker_count() -> int:
    """1 outside pytest-xdist, else how many workers the session has."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


def second_pass_shift(base: int) -> int:
    """How far a second suite beside the first (``TEST_REDIS_PASS=2``) moves its Redis databases.

    ``make test`` runs its SQLite and PostgreSQL passes at once on one Redis: the second pass takes
    the databases right below the first pass's (with the default 13 and three workers, 10 to 12
    beside 13 to 15), or right above them when there is no room below.
    """
    if os.environ.get("TEST_REDIS_PASS", "1") != "2":
        return 0
    workers = xdist_worker_count()
    return -workers if base >= workers else workers


def worker_redis_url(url: str) -> str:
    """``url`` with its database number moved up by the xdist worker's index: one database per worker."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + second_pass_shift(base) + xdist_worker_index()}"))


def session_redis_url() -> str:
    """This session's Redis database: ``TEST_REDIS_URL``, offset per xdist worker."""
    return worker_redis_url(TEST_REDIS_URL)


def _all_plugins_config(url: str, instance: Path, **extra) -> dict:
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": url,
        "REDIS_URL": session_redis_url(),
        "RQ_QUEUE": f"test-{os.getpid()}",  # two suites on one Redis never take each other's jobs
        "WTF_CSRF_ENABLED": False,
        "INSTANCE_PATH": str(instance),
        # The test client and the live server speak plain HTTP; production cookies are Secure.
        "COOKIES_OVER_HTTP": True,
        # The suite's IMAP servers (Dovecot, hostile ones) listen on loopback, which production refuses.
        "IMAP_BLOCK_PRIVATE_HOSTS": False,
        # The suite's Dovecots keep their CA certificates under the temporary directory; a test of the CA
        # directory itself narrows this to one Dovecot's.
        "IMAP_CA_DIR": tempfile.gettempdir(),
    }
    config.update(extra)
    return config


def _create_postgres_database(server_url: str) -> str:
    name = f"crm_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(server_url: str, url: str) -> None:
    name = sa.engine.make_url(url).database
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def crm_database_server_url() -> str | None:
    """The PostgreSQL server the suite runs on (``TEST_DATABASE_URL``), or None for SQLite."""
    return os.environ.get("TEST_DATABASE_URL") or None


@pytest.fixture(scope="session")
def crm_database_url(crm_database_server_url, tmp_path_factory) -> Iterator[str]:
    """A database migrated with the host and every installed plugin, for the whole session (per xdist worker)."""
    server_url = crm_database_server_url
    if server_url:
        url = _create_postgres_database(server_url)
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "template.sqlite")
    app = create_app(_all_plugins_config(url, tmp_path_factory.mktemp("instance")))
    migrating.upgrade(app)
    with app.app_context():
        db.engine.dispose()
    yield url
    if server_url:
        engine = _emptying_engines.pop(url, None)
        if engine is not None:
            engine.dispose()
        _drop_postgres_database(server_url, url)


# One engine per session database: connecting anew before every test costs more than the TRUNCATE.
_emptying_engines: dict[str, sa.Engine] = {}


def _empty_database(url: str) -> None:
    """Delete every row (schema and Alembic versions stay) so each test starts clean."""
    engine = _emptying_engines.get(url) or _emptying_engines.setdefault(
        url, sa.create_engine(url, pool_pre_ping=True))
    if engine.dialect.name == "postgresql":
        _empty_postgres_database(engine)
        return
    with engine.connect() as conn:
        # Full-text indexes (FTS5 virtual tables) and their shadow tables are not emptied row by row: the
        # triggers that keep them in step with their content table do that, and 'delete-all' makes sure.
        fts_tables = conn.scalars(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%fts5%'")).all()
    meta = sa.MetaData()
    meta.reflect(engine, only=lambda name, _meta: not any(name == v or name.startswith(v + "_") for v in fts_tables))
    tables = [t for t in meta.sorted_tables if not t.name.startswith("alembic_version")]
    with engine.begin() as conn:
        for table in reversed(tables):
            conn.execute(table.delete())
        if any(t.name == "sqlite_sequence" for t in meta.sorted_tables):
            conn.execute(sa.text("DELETE FROM sqlite_sequence"))
        for name in fts_tables:
            conn.execute(sa.text(f"INSERT INTO \"{name}\" (\"{name}\") VALUES ('delete-all')"))


def _empty_postgres_database(engine: sa.Engine) -> None:
    """Every row out, every sequence back to 1, as ``TRUNCATE ... RESTART IDENTITY`` would leave them.

    A superuser (the suite's ``postgres``) DELETEs with foreign-key triggers off
    (``session_replication_role = replica``), in one round trip: after a test most tables are
    empty or nearly, and DELETE on those costs next to nothing, where TRUNCATE makes new files
    for every table and index (about five times slower here, paid before every test). Other
    roles may not switch triggers off, so they TRUNCATE ... CASCADE.
    """
    with engine.begin() as conn:
        # The catalogue, not a full reflection, and read each time: a test may add tables (a plugin enabled later).
        names = conn.scalars(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename NOT LIKE 'alembic_version%' ORDER BY tablename")).all()
        if not names:
            return
        if conn.scalar(sa.text("SELECT current_setting('is_superuser')")) != "on":
            quoted = ", ".join(f'"{name}"' for name in names)
            conn.execute(sa.text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
            return
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica; "
                             + "; ".join(f'DELETE FROM "{name}"' for name in names))
        # setval is not rolled back and takes no table lock; only sequences that were used need it.
        conn.execute(sa.text(
            "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false) "
            "FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"))


@pytest.fixture
def redis_url() -> str:
    """A Redis database for tests, emptied before each test."""
    from redis import Redis

    url = session_redis_url()
    conn = Redis.from_url(url)
    conn.flushdb()
    conn.close()
    return url


@pytest.fixture
def crm_app_factory(crm_database_url, redis_url, tmp_path) -> Iterator[Callable[..., Flask]]:
    """Return ``make(plugins=None, disabled=(), **config) -> Flask`` on a clean database."""
    if crm_database_url.startswith("sqlite"):
        # A copy of the migrated template: faster than deleting rows, and fully isolated.
        path = tmp_path / "crm.sqlite"
        shutil.copy(sa.engine.make_url(crm_database_url).database, path)
        url = f"sqlite:///{path}"
    else:
        _empty_database(crm_database_url)
        url = crm_database_url
    apps: list[Flask] = []

    def make(plugins: dict[str, str] | None = None, disabled=(), **config) -> Flask:
        instance = tmp_path / "instance"
        instance.mkdir(exist_ok=True)
        app = create_app(
            _all_plugins_config(url, instance, PLUGINS=plugins, DISABLED_PLUGINS=list(disabled), **config)
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(crm_app_factory) -> Flask:
    """The app with every installed plugin."""
    return crm_app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# A password's real scrypt hash, made once per session: hashing costs a tenth of a CPU second, which
# most tests paid for their admin (and again for an agent). Signing in still checks the real hash.
_password_hashes: dict[str, str] = {}


def _session_password_hash(password: str) -> str:
    if password not in _password_hashes:
        _password_hashes[password] = generate_password_hash(password)
    return _password_hashes[password]


def make_agent(app: Flask, email: str, password: str, admin: bool = False, name: str | None = None):
    from .auth import create_agent

    with app.app_context(), mock.patch.object(models, "generate_password_hash", _session_password_hash):
        agent = create_agent(email, name or email.split("@")[0].title(), password, admin=admin)
        return agent.id


@pytest.fixture
def admin(app) -> int:
    return make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")


@pytest.fixture
def agent(app) -> int:
    return make_agent(app, "agent@team.example", AGENT_PASSWORD, name="Alan Agent")


def run_jobs(app: Flask) -> bool:
    """Run the app's queued jobs, and those they enqueue, on a real RQ worker (burst); True when any ran.

    A ``SimpleWorker`` in this process: the jobs see the test's database and monkeypatches, and a job
    that fails is recorded as failed on RQ, not raised here.
    """
    with app.app_context():
        return make_worker(app, simple=True).work(burst=True)


def log_in(client, email: str, password: str):
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 302, f"login failed for {email}"
    return client


@pytest.fixture
def admin_client(app, admin):
    return log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)


@pytest.fixture
def agent_client(app, agent):
    return log_in(app.test_client(), "agent@team.example", AGENT_PASSWORD)
