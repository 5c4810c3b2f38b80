"""Column types and query helpers for the host and its plugins, where SQLite and PostgreSQL differ."""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

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
