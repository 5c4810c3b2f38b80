"""Set-based writes of synced mail: a few statements per table per batch, never a query per message.

Everything here runs inside the caller's transaction; the sync commits once
per batch, so a failed batch leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import operator
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from host_app.api import UTCDateTime, db

from .models import Message, MessageAddress
from .uids import uid_array

messages = Message.__table__
addresses = MessageAddress.__table__

CHUNK = 500  # ids per IN (...) list: far below every database's parameter limit


def _chunks(items: Sequence, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def stored_uids(folder_id: int) -> array:
    """UIDs of the folder's messages, ascending (stale rows awaiting a re-match have negative UIDs, left out)."""
    query = (sa.select(messages.c.uid).where(messages.c.folder_id == folder_id, messages.c.uid > 0)
             .order_by(messages.c.uid).execution_options(yield_per=20000))
    return uid_array(db.session.scalars(query))


def stored_count(folder_id: int) -> int:
    return db.session.execute(
        sa.select(sa.func.count()).select_from(messages).where(messages.c.folder_id == folder_id, messages.c.uid > 0)
    ).scalar_one()


def inbox_message_count(inbox_id: int) -> int:
    return db.session.execute(
        sa.select(sa.func.count()).select_from(messages).where(messages.c.inbox_id == inbox_id, messages.c.uid > 0)
    ).scalar_one()


def uid_range(folder_id: int) -> tuple[int | None, int | None]:
    low, high = db.session.execute(
        sa.select(sa.func.min(messages.c.uid), sa.func.max(messages.c.uid))
        .where(messages.c.folder_id == folder_id, messages.c.uid > 0)
    ).one()
    return low, high


def existing_uids(folder_id: int, uids: Iterable[int]) -> set[int]:
    """Which of ``uids`` are already stored (a guard against storing one message twice)."""
    found: set[int] = set()
    ordered = sorted(uids)
    if not ordered:
        return found
    rows = db.session.execute(
        sa.select(messages.c.uid).where(messages.c.folder_id == folder_id,
                                        messages.c.uid.between(ordered[0], ordered[-1]))
    )
    wanted = set(ordered)
    return {uid for (uid,) in rows if uid in wanted}


def mark_stale(folder_id: int) -> int:
    """After a UIDVALIDITY change: park every stored message under a negative UID until it is re-matched."""
    result = db.session.execute(
        sa.update(messages).where(messages.c.folder_id == folder_id, messages.c.uid > 0)
        .values(uid=-messages.c.id)
    )
    return result.rowcount or 0


def has_stale(folder_id: int) -> bool:
    return db.session.execute(
        sa.select(messages.c.id).where(messages.c.folder_id == folder_id, messages.c.uid < 0).limit(1)
    ).first() is not None


def stale_by_key(folder_id: int, keys: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Stale rows (negative UID) of the folder with these dedup keys: key -> [{id, subject, size, date, from_email}]."""
    found: dict[str, list[dict[str, Any]]] = {}
    for chunk in _chunks(sorted(set(keys))):
        rows = db.session.execute(
            sa.select(messages.c.dedup_key, messages.c.id, messages.c.subject, messages.c.size, messages.c.date,
                      messages.c.from_email)
            .where(messages.c.folder_id == folder_id, messages.c.uid < 0, messages.c.dedup_key.in_(chunk))
            .order_by(messages.c.id)
        )
        for key, message_pk, subject, size, date, from_email in rows:
            found.setdefault(key, []).append(
                {"id": message_pk, "subject": subject, "size": size, "date": date, "from_email": from_email})
    return found


def rematch(updates: Sequence[dict[str, Any]]) -> None:
    """Give re-matched stale rows their new UID and flags: ``[{"pk": id, "new_uid": uid, "new_flags": flags}]``."""
    if not updates:
        return
    db.session.execute(
        sa.update(messages).where(messages.c.id == sa.bindparam("pk"))
        .values(uid=sa.bindparam("new_uid"), flags=sa.bindparam("new_flags")),
        list(updates),
    )


MESSAGE_COLUMNS = tuple(c.name for c in messages.columns if c.name != "id")
ADDRESS_COLUMNS = tuple(c.name for c in addresses.columns)
_DATETIME_COLUMNS = {
    table.name: frozenset(c.name for c in table.columns if isinstance(c.type, UTCDateTime))
    for table in (messages, addresses)
}
ROWS_PER_STATEMENT = 100  # SQLite, see _insert_many_rows
_insert_statements: dict[tuple[str, str, int], str] = {}
# Rows go in ordered by the index with random keys (Message-IDs, addresses): the B-tree is then walked
# once per batch, page after page, instead of at random; twice the insert speed on SQLite at 100k.
_INSERT_ORDER = {messages.name: "dedup_key", addresses.name: "email"}
_PREPARED_DIALECTS = ("sqlite", "postgresql")


def _sqlite_datetime(value):
    # SQLAlchemy's SQLite storage format for DateTime: naive UTC, microseconds always written.
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value.isoformat(" ", "microseconds")[:26]


@dataclasses.dataclass(slots=True)
class PreparedRows:
    """One folder's new messages as the database takes them (:func:`prepare_rows`), for :func:`insert_prepared`.

    Plain values, so a helper process can prepare a batch while the writer
    stores the last one: sorting, flattening and (on SQLite) formatting dates
    were a tenth of a first sync's writer thread. ``messages`` and
    ``addresses`` hold the values in column order: on SQLite one flat list (a
    row every ``len(MESSAGE_COLUMNS)`` / ``len(ADDRESS_COLUMNS)`` values, as
    its multi-row INSERTs take them), on PostgreSQL a tuple per row (as COPY
    writes them). An address row's ``message_pk`` holds its message's place in
    ``uids`` until the messages have ids.
    """

    dialect: str
    folder_id: int
    uids: list[int]  # in the order of the rows given to prepare_rows
    messages: list
    addresses: list


def prepare_rows(rows: Sequence[dict[str, Any]], address_rows: Sequence[Sequence[dict[str, Any]]],
                 dialect: str) -> PreparedRows:
    """The rows of :func:`insert_messages` prepared for ``dialect`` ("sqlite" or "postgresql"); needs no database.

    Sets each address row's ``message_pk`` to its message's place in ``rows`` (a copy of every row would
    cost more than the preparing).
    """
    if dialect not in _PREPARED_DIALECTS:
        raise ValueError(f"rows are prepared for SQLite and PostgreSQL, not {dialect}")
    placed = []
    for place, message_addresses in enumerate(address_rows):
        for row in message_addresses:
            row["message_pk"] = place
            placed.append(row)
    dates: dict[int, str | None] = {}  # addresses share their message's datetime objects
    return PreparedRows(
        dialect=dialect,
        folder_id=rows[0]["folder_id"] if rows else 0,
        uids=[row["uid"] for row in rows],
        messages=_insert_values(messages, MESSAGE_COLUMNS, rows, dialect, dates),
        addresses=_insert_values(addresses, ADDRESS_COLUMNS, placed, dialect, dates),
    )


def _insert_values(table: sa.Table, columns: Sequence[str], rows: Sequence[dict[str, Any]], dialect: str,
                 dates: dict[int, str | None]) -> list:
    """The rows' values in the table's insert order, as PreparedRows holds them (dates as SQLite keeps them)."""
    getter = operator.itemgetter(*columns)
    rows = sorted(rows, key=operator.itemgetter(_INSERT_ORDER[table.name]))
    if dialect != "sqlite":
        return [getter(row) for row in rows]
    values: list = []
    positions = [i for i, c in enumerate(columns) if c in _DATETIME_COLUMNS[table.name]]
    for row in rows:
        row_values = list(getter(row))
        for i in positions:
            value = row_values[i]
            if value is not None:
                text = dates.get(id(value))
                if text is None:
                    text = dates[id(value)] = _sqlite_datetime(value)
                row_values[i] = text
        values.extend(row_values)
    return values


def _write_values(connection: sa.Connection, table: sa.Table, columns: Sequence[str], values: list) -> None:
    """Prepared values (see PreparedRows) straight to the driver (COPY on PostgreSQL, multi-row INSERTs on SQLite).

    SQLAlchemy's per-row parameter processing was half the insert's CPU.
    """
    if not values:
        return
    if connection.dialect.name == "sqlite":
        _insert_many_rows(connection, table, columns, values)
        return
    if connection.dialect.driver == "psycopg":
        _copy_rows(connection, table, columns, values)
        return
    connection.exec_driver_sql(_insert_sql(connection.dialect, table, columns, 1), values)


def _insert_sql(dialect: sa.Dialect, table: sa.Table, columns: Sequence[str], rows: int) -> str:
    """``INSERT INTO table (columns) VALUES (...), ...`` for ``rows`` rows, built once per table and row count."""
    key = (dialect.name, table.name, rows)
    sql = _insert_statements.get(key)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        one_row = f"({', '.join(['?' if dialect.paramstyle == 'qmark' else '%s'] * len(columns))})"
        sql = _insert_statements[key] = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES {', '.join([one_row] * rows)}"
        )
    return sql


def _insert_many_rows(connection: sa.Connection, table: sa.Table, columns: Sequence[str], params: list) -> None:
    """SQLite: ROWS_PER_STATEMENT rows per INSERT statement (fewer if the build's bound-parameter limit says so).

    The FTS5 search index (kept by a trigger on ``mail_message``) writes its
    pending terms out at the end of every statement: with one statement per row
    (executemany) that was a new index segment per message, and the index took
    two thirds of the sync's insert time. A statement of many rows makes one
    segment of them, and the rows themselves also go in a little faster.
    At N=30,000, 100 rows a statement used as little CPU as 500 and 3 MB less memory (peak RSS 139.8 vs
    142.6 MB; one row a statement 138.4 MB and twice the CPU).
    """
    width = len(columns)
    per_statement = max(1, min(ROWS_PER_STATEMENT, _sqlite_variable_limit(connection) // width))
    rows = len(params) // width
    for start in range(0, rows, per_statement):
        count = min(per_statement, rows - start)
        connection.exec_driver_sql(_insert_sql(connection.dialect, table, columns, count),
                                   tuple(params[start * width:(start + count) * width]))


def _sqlite_variable_limit(connection: sa.Connection) -> int:
    # SQLite 3.32+ allows 32,766 bound parameters per statement, older builds 999; the build says which.
    raw = connection.connection.dbapi_connection
    getlimit = getattr(raw, "getlimit", None)
    return getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else 999


def _copy_rows(connection: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    """COPY ... FROM STDIN in the session's transaction: twice as fast as a pipelined executemany.

    COPY goes past SQLAlchemy, so a driver error is wrapped here as SQLAlchemy
    would (a lost connection becomes sqlalchemy's OperationalError, and the
    connection is invalidated so the session can roll back and reconnect).
    """
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN (FORMAT BINARY)"
    raw = connection.connection.dbapi_connection
    dbapi = dialect.loaded_dbapi
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types([_binary_type(table.c[name].type) for name in columns])
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:
        if dialect.is_disconnect(exc, raw, None):
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi.Error) from exc


def _binary_type(column_type: sa.types.TypeEngine) -> str:
    # Binary COPY needs each column's exact PostgreSQL type (varchar and text share one binary form).
    if isinstance(column_type, sa.BigInteger):
        return "int8"
    if isinstance(column_type, sa.Integer):
        return "int4"
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, UTCDateTime):
        return "timestamptz"
    return "text"


@contextlib.contextmanager
def bulk_writes(sqlite_cache_mib: int) -> Iterator[None]:
    """While many batches go in: on SQLite, a page cache that holds the indexes being written.

    SQLite's default cache (2 MiB) is far smaller than the indexes of a large
    mailbox, so each batch re-reads index pages from the file. The setting is
    the connection's; it is put back afterwards, which frees the memory.
    """
    connection = db.session.connection()
    previous = None
    if connection.dialect.name == "sqlite" and sqlite_cache_mib > 0:
        previous = connection.exec_driver_sql("PRAGMA cache_size").scalar()
        connection.exec_driver_sql(f"PRAGMA cache_size = -{int(sqlite_cache_mib) * 1024}")
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a failed batch must not hide its own error
                db.session.connection().exec_driver_sql(f"PRAGMA cache_size = {int(previous)}")


# SQLite's full-text index (FTS5, migrations c7d41f2a9e60 and e3b9d7f1a5c2): its insert trigger leaves alone the
# rows inserted while this table holds a row, and the bulk insert indexes them itself. Off only for
# ``python -m bench.search``, which measures the insert on the schema from before the index.
index_search_per_batch = True
_BULK_INSERT_MARK = "INSERT INTO mail_search_bulk_insert (id) VALUES (1)"
_BULK_INSERT_UNMARK = "DELETE FROM mail_search_bulk_insert"
_INDEX_RANGE = ("INSERT INTO mail_message_search (rowid, subject, preview) "
                "SELECT id, subject, preview FROM mail_message WHERE id BETWEEN ? AND ?")
_INDEX_ROWS = ("INSERT INTO mail_message_search (rowid, subject, preview) "
               "SELECT id, subject, preview FROM mail_message WHERE id IN :ids")


@contextlib.contextmanager
def _search_index_filled_per_batch(connection: sa.Connection) -> Iterator[Callable[[Sequence[int]], None]]:
    """On SQLite, index the batch with one statement instead of row by row through the trigger.

    FTS5 writes out a new index segment at the end of every statement, so the
    trigger made one per INSERT of the batch (100 rows each) and merged them
    again; one ``INSERT ... SELECT`` per batch took half the CPU in a
    micro-benchmark of 110,000 messages. The mark is a row only this
    transaction sees, always deleted before it ends, so every other writer's
    rows are indexed by the trigger as before.
    """
    if connection.dialect.name != "sqlite" or not index_search_per_batch:
        yield lambda ids: None
        return

    def index_batch(ids: Sequence[int]) -> None:
        low, high = min(ids), max(ids)
        if high - low + 1 == len(ids):  # always so far: this transaction is the database's only writer
            connection.exec_driver_sql(_INDEX_RANGE, (low, high))
            return
        for chunk in _chunks(sorted(ids)):
            connection.execute(sa.text(_INDEX_ROWS).bindparams(sa.bindparam("ids", expanding=True)),
                               {"ids": list(chunk)})

    connection.exec_driver_sql(_BULK_INSERT_MARK)
    try:
        yield index_batch
    except BaseException:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a broken connection rolls the mark back anyway
            connection.exec_driver_sql(_BULK_INSERT_UNMARK)
        raise
    connection.exec_driver_sql(_BULK_INSERT_UNMARK)


def insert_messages(rows: Sequence[dict[str, Any]], address_rows: Sequence[Sequence[dict[str, Any]]]) -> list[int]:
    """Insert one folder's messages and their addresses; returns the new message ids in the order of ``rows``.

    Rows must carry every column but ``id``; see :func:`insert_prepared`.
    """
    if not rows:
        return []
    return insert_prepared(prepare_rows(rows, address_rows, db.session.connection().dialect.name))


def insert_prepared(prepared: PreparedRows) -> list[int]:
    """Insert a folder's messages prepared by :func:`prepare_rows`; returns their new ids in the order of ``uids``.

    The driver's fastest path (COPY on PostgreSQL, INSERTs of 100 rows each on
    SQLite) and one indexed range query mapping UIDs (unique per
    folder) to the new ids. INSERT ... RETURNING over a 1000-row VALUES list
    measured 5x slower on PostgreSQL.
    """
    if not prepared.uids:
        return []
    connection = db.session.connection()
    if connection.dialect.name != prepared.dialect:
        raise ValueError(f"rows prepared for {prepared.dialect} cannot go into {connection.dialect.name}")
    if prepared.dialect == "postgresql":
        # The batch commits with its own checkpoint, so a commit lost to a server crash only means
        # fetching that batch again: no need to wait for the WAL flush.
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
    uids = prepared.uids
    with _search_index_filled_per_batch(connection) as index_batch:
        _write_values(connection, messages, MESSAGE_COLUMNS, prepared.messages)
        id_by_uid = dict(connection.execute(
            sa.select(messages.c.uid, messages.c.id)
            .where(messages.c.folder_id == prepared.folder_id, messages.c.uid.between(min(uids), max(uids)))
        ).all())
        ids = [id_by_uid[uid] for uid in uids]
        index_batch(ids)
    _write_values(connection, addresses, ADDRESS_COLUMNS, _addresses_of(prepared, ids))
    return ids


def _addresses_of(prepared: PreparedRows, ids: Sequence[int]) -> list:
    """The prepared address values with each message's place in the batch replaced by its id (``ids[place]``)."""
    values, at = prepared.addresses, ADDRESS_COLUMNS.index("message_pk")
    if prepared.dialect == "sqlite":
        values[at::len(ADDRESS_COLUMNS)] = [ids[place] for place in values[at::len(ADDRESS_COLUMNS)]]
        return values
    return [row[:at] + (ids[row[at]],) + row[at + 1:] for row in values]


def delete_message_ids(ids: Sequence[int]) -> int:
    """Delete messages (and their addresses) by primary key."""
    count = 0
    for chunk in _chunks(list(ids)):
        db.session.execute(sa.delete(addresses).where(addresses.c.message_pk.in_(chunk)))
        count += db.session.execute(sa.delete(messages).where(messages.c.id.in_(chunk))).rowcount or 0
    return count


def delete_uids(folder_id: int, uids: Iterable[int]) -> int:
    """Delete the folder's messages with these UIDs (expunged on the server)."""
    ids: list[int] = []
    for chunk in _chunks(sorted(uids)):
        ids.extend(db.session.execute(
            sa.select(messages.c.id).where(messages.c.folder_id == folder_id, messages.c.uid.in_(chunk))
        ).scalars())
    return delete_message_ids(ids)


def delete_stale(folder_id: int) -> int:
    """Delete parked rows that were not found again after a UIDVALIDITY change."""
    ids = db.session.execute(
        sa.select(messages.c.id).where(messages.c.folder_id == folder_id, messages.c.uid < 0)
    ).scalars().all()
    return delete_message_ids(ids)


def delete_folder_messages(folder_id: int) -> int:
    ids = db.session.execute(sa.select(messages.c.id).where(messages.c.folder_id == folder_id)).scalars().all()
    return delete_message_ids(ids)


def update_flags(folder_id: int, flags_by_uid: dict[int, str]) -> int:
    """Store changed flags (CONDSTORE); returns how many stored messages changed."""
    if not flags_by_uid:
        return 0
    current = {}
    for chunk in _chunks(sorted(flags_by_uid)):
        current.update(db.session.execute(
            sa.select(messages.c.uid, messages.c.flags)
            .where(messages.c.folder_id == folder_id, messages.c.uid.in_(chunk))
        ).all())
    changes = [{"f": folder_id, "u": uid, "new_flags": flags}
               for uid, flags in flags_by_uid.items() if uid in current and current[uid] != flags]
    if changes:
        db.session.execute(
            sa.update(messages)
            .where(messages.c.folder_id == sa.bindparam("f"), messages.c.uid == sa.bindparam("u"))
            .values(flags=sa.bindparam("new_flags")),
            changes,
        )
    return len(changes)


def set_direction(folder_id: int, direction: str | None, own_addresses: Iterable[str] = ()) -> None:
    """Re-derive direction after a folder's role changed (Sent: all out; else out only when we sent it).

    Messages that turn incoming lose their Bcc rows, which only outgoing mail keeps (see RECIPIENT_ROLES in
    plugins/mail/models.py).
    Messages that turn outgoing cannot get theirs back: their headers are not fetched again.
    """
    if direction is not None:
        db.session.execute(sa.update(messages).where(messages.c.folder_id == folder_id).values(direction=direction))
        return
    own = [a for a in own_addresses if a]
    db.session.execute(
        sa.update(messages).where(messages.c.folder_id == folder_id)
        .values(direction=sa.case((messages.c.from_email.in_(own), "out"), else_="in") if own else "in")
    )
    incoming = sa.select(messages.c.id).where(messages.c.folder_id == folder_id, messages.c.direction == "in")
    db.session.execute(sa.delete(addresses).where(addresses.c.role == "bcc", addresses.c.message_pk.in_(incoming)))


def delete_inbox_mail(inbox_id: int) -> int:
    """Delete every stored message of the inbox with its addresses; returns how many messages went."""
    # Set-based, children first: far faster than ORM cascades on 100k messages.
    inbox_messages = db.select(Message.id).where(Message.inbox_id == inbox_id)
    db.session.execute(db.delete(MessageAddress).where(MessageAddress.message_pk.in_(inbox_messages)))
    return db.session.execute(db.delete(Message).where(Message.inbox_id == inbox_id)).rowcount or 0
