"""SQL that SQLite and PostgreSQL spell differently: a delay in whole seconds, "sent before".

Dates are compared to the microsecond on both databases, so a response is
the same whichever one stores it. Other dialects get a plain error.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles


class DelaySeconds(sa.sql.functions.FunctionElement):
    """``replied - sent`` in whole seconds, truncated toward zero like ``int(timedelta.total_seconds())``."""

    type = sa.BigInteger()
    name = "delay_seconds"
    inherit_cache = True


class SentBefore(sa.sql.functions.FunctionElement):
    """``sent < replied``, to the microsecond."""

    type = sa.Boolean()
    name = "sent_before"
    inherit_cache = True


def _sqlite_microseconds(compiler, column, **kw) -> str:
    # SQLite keeps these dates as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'. Its date functions
    # round to milliseconds, so whole seconds and microseconds are read separately, as integers.
    # The padding reads a value stored without a fraction as .000000.
    text = compiler.process(column, **kw)
    return (f"(CAST(strftime('%s', substr({text}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({text} || '000000', 21, 6) AS INTEGER))")


@compiles(DelaySeconds, "sqlite")
def _delay_seconds_sqlite(element, compiler, **kw):
    sent, replied = element.clauses
    # Integer division in SQLite truncates toward zero, as int() does.
    return (f"(({_sqlite_microseconds(compiler, replied, **kw)}"
            f" - {_sqlite_microseconds(compiler, sent, **kw)}) / 1000000)")


@compiles(DelaySeconds, "postgresql")
def _delay_seconds_postgresql(element, compiler, **kw):
    sent, replied = (compiler.process(c, **kw) for c in element.clauses)
    # EXTRACT returns an exact numeric (PostgreSQL 14+); trunc() goes toward zero.
    return f"CAST(trunc(EXTRACT(EPOCH FROM {replied} - {sent})) AS BIGINT)"


@compiles(SentBefore, "sqlite")
def _sent_before_sqlite(element, compiler, **kw):
    sent, replied = element.clauses
    return f"({_sqlite_microseconds(compiler, sent, **kw)} < {_sqlite_microseconds(compiler, replied, **kw)})"


@compiles(SentBefore, "postgresql")
def _sent_before_postgresql(element, compiler, **kw):
    sent, replied = (compiler.process(c, **kw) for c in element.clauses)
    return f"({sent} < {replied})"


@compiles(DelaySeconds)
@compiles(SentBefore)
def _unsupported(element, compiler, **kw):
    raise CompileError(f"reply_condition supports SQLite and PostgreSQL, not {compiler.dialect.name}")
