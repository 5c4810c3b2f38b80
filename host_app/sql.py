"""Column types and query helpers for the host and its plugins, where SQLite and PostgreSQL differ."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from .extensions import db


class UTCDateTime(sa.types.TypeDecorator):
    """A point in time, stored as ``DateTime(timezone=True)`` and always read back as an aware UTC datetime.

    SQLite keeps no time zone and hands back naive values (which are UTC);
    PostgreSQL hands back the session's time zone. Both come out in UTC here,
    so no caller compares naive with aware. A naive datetime going in is
    refused with ``ValueError``: it could mean local time as well as UTC, so
    the caller must say (``datetime.now(UTC)``, ``value.replace(tzinfo=UTC)``).
    Aware values in another zone are stored as the same instant in UTC (SQLite
    would otherwise drop the offset). Raw SQL that bypasses this type still
    reads naive values on SQLite.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} for a UTCDateTime column: give it a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class NotIndexed(sa.sql.functions.FunctionElement):
    """The column, kept from driving SQLite's plan: ``+column``, SQLite's way to rule an index out.

    SQLite plans without statistics. For ``inbox_id = ? AND id > ?`` it
    prefers an (inbox_id, date) index and walks every message of the inbox,
    where the id range alone reads the batch; to GROUP BY an address it walks
    the address index and jumps from row to row, where reading the table in
    order and sorting is twice as fast. Other databases plan from statistics
    and get the plain column.
    """

    name = "not_indexed"
    inherit_cache = True

    @property
    def type(self):
        return next(iter(self.clauses)).type


@compiles(NotIndexed)
def _not_indexed(element, compiler, **kw):
    return compiler.process(next(iter(element.clauses)), **kw)


@compiles(NotIndexed, "sqlite")
def _not_indexed_sqlite(element, compiler, **kw):
    return "+" + compiler.process(next(iter(element.clauses)), **kw)


def member_of(column, values: Iterable) -> sa.ColumnElement[bool]:
    """``column IN values`` with one parameter, however many values: an array on PostgreSQL, JSON on SQLite.

    An IN list is one bound parameter per value, so each length is another
    statement. On PostgreSQL, looking up the thousand senders of a synced
    batch took about 5 ms that way and 1 ms with the array. SQLite's driver
    keeps the last 128 statements prepared, each with its parameters: a
    first sync of 330k messages grew by 20 MB through its batches' IN lists
    (bench/README.md). So callers pass every value at once, without chunks.
    Values must be numbers or strings.
    """
    values = list(values)
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column.type)))
    if dialect == "sqlite":
        listed = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.String)).table_valued("value")
        return column.in_(sa.select(listed.c.value))
    return column.in_(values)


def insert_or_ignore(table: sa.Table) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``: rows that clash with a unique key are skipped, not raised."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def bulk_insert_or_ignore(table: sa.Table, rows: Sequence[Mapping[str, Any]],
                          returning: Sequence[sa.Column] = ()) -> list[sa.Row]:
    """Insert ``rows`` (dicts with the same keys) skipping those that clash with a unique key; return the
    ``returning`` columns of the rows inserted.

    On PostgreSQL one statement over arrays: an executemany there is one
    statement per row on the server (a third of the reply matcher's time on a
    first sync). SQLite's executemany runs in process and is as fast.
    """
    if not rows:
        return []
    bind = db.session.get_bind()
    if bind.dialect.name != "postgresql":
        statement = insert_or_ignore(table)
        if returning:
            return list(db.session.execute(statement.returning(*returning), list(rows)))
        db.session.execute(statement, list(rows))
        return []
    dialect = bind.dialect
    quote = dialect.identifier_preparer.quote
    names = list(rows[0])
    arrays, params = [], {}
    for n, name in enumerate(names):
        column_type = table.c[name].type
        to_driver = column_type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[name] for row in rows]
        params[f"p{n}"] = [to_driver(v) for v in values] if to_driver else values
        arrays.append(f"CAST(:p{n} AS {column_type.compile(dialect)}[])")
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) "
           f"SELECT * FROM unnest({', '.join(arrays)}) ON CONFLICT DO NOTHING")
    if not returning:
        db.session.execute(sa.text(sql), params)
        return []
    sql += f" RETURNING {', '.join(quote(column.name) for column in returning)}"
    return list(db.session.execute(sa.text(sql).columns(*returning), params))
