"""Fresh databases for one benchmark run: a SQLite file, or a PostgreSQL database created and dropped."""
from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


def postgres_reachable(server_url: str) -> bool:
    url = sa.engine.make_url(server_url)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def fresh_database(backend: str, workdir: Path, pg_server_url: str = DEFAULT_PG_URL,
                   keep: bool = False) -> Iterator[str]:
    """Yield the URL of a new, empty database; a PostgreSQL one is dropped afterwards unless ``keep``."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.sqlite"
        yield f"sqlite:///{path}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown database backend {backend!r}; use one of {', '.join(BACKENDS)}")
    name = f"crm_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.engine.make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            if not keep:
                with engine.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def app_config(database_url: str, instance_path: Path, redis_url: str, queue: str = "bench") -> dict:
    """The app configuration every benchmark child builds its app with (all installed plugins).

    ``queue`` also names the sync's Redis locks, so each database gets its own.
    """
    return {
        "SECRET_KEY": "bench-secret",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "RQ_QUEUE": queue,
        "WTF_CSRF_ENABLED": False,
        "INSTANCE_PATH": str(instance_path),
        # Dovecot listens on loopback; the benchmark connects there on purpose.
        "IMAP_BLOCK_PRIVATE_HOSTS": False,
    }
