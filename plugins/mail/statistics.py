"""Planner statistics of the stored mail, refreshed by the readers that join it right after a big sync.

After the first sync of a large mailbox, PostgreSQL's statistics still describe
near-empty ``mail_message`` and ``mail_message_address`` tables until
autovacuum gets to them, and its plans for the readers' joins (the contacts
import's aggregate, the reply matcher's) go from milliseconds to seconds. A
reader's follow-up job calls :func:`refresh_if_stale` before its queries with
its own watermark; whichever reader runs first pays the ANALYZE, and the next
one finds the statistics current and skips it. SQLite plans without them:
nothing happens there.
"""
from __future__ import annotations

import sqlalchemy as sa

from host_app.api import db

from .models import Message, MessageAddress

# A reader with fewer messages than this past its watermark pays an ANALYZE only when the statistics were
# never gathered: an incremental sync's follow-ups stay cheap.
MIN_NEW_MESSAGES = 10000
# Stale: the table gained at least MIN_NEW_MESSAGES rows, and this share of the rows the planner believes it
# holds, since its statistics were last gathered (autovacuum's own analyze threshold is a tenth).
STALE_SHARE = 0.2
# Only the columns readers join and filter on: the long text columns (subject, preview, references) are most
# of the cost of a full ANALYZE, and a partial one leaves autovacuum's own ANALYZE due.
ANALYZED_COLUMNS = {
    Message.__tablename__: ("id", "inbox_id", "direction", "automated", "date", "dedup_key", "message_id"),
    MessageAddress.__tablename__: ("message_pk", "inbox_id", "role", "email", "name"),
}


def refresh_if_stale(inbox_id: int, after_message_id: int | None) -> bool:
    """ANALYZE the message tables before a reader reads a large backlog with statistics that predate it.

    Runs when ``mail_message``'s statistics were never gathered (``pg_class.reltuples``
    is -1 until the first ANALYZE or VACUUM): a small database that autovacuum
    has not analyzed yet is planned as if every table held a row or two, and the
    incremental import's query then walked the whole address table once per
    address row (4 s for 1,000 new messages in a 3,000-message mailbox). And
    when at least ``MIN_NEW_MESSAGES`` of the inbox's messages come after
    ``after_message_id`` (the reader's watermark; None or 0 for all) and what the
    planner believes the table holds lags the live row count the server keeps
    (``pg_stat_user_tables.n_live_tup``) by ``MIN_NEW_MESSAGES`` and
    ``STALE_SHARE``. Returns True when it ran ANALYZE. Commits, on SQLite too:
    call it before the reader's own transaction starts.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.commit()
        return False
    believed, live = _statistics(Message.__tablename__)
    if believed >= 0:
        newer = (sa.select(Message.id)
                 .where(Message.inbox_id == inbox_id, Message.id > (after_message_id or 0))
                 .limit(MIN_NEW_MESSAGES))
        backlog = db.session.scalar(sa.select(sa.func.count()).select_from(newer.subquery()))
        grown = live - believed
        if backlog < MIN_NEW_MESSAGES or grown < MIN_NEW_MESSAGES or grown <= STALE_SHARE * believed:
            db.session.commit()
            return False
    db.session.execute(sa.text("ANALYZE " + ", ".join(
        f'"{table}" ({", ".join(columns)})' for table, columns in ANALYZED_COLUMNS.items())))
    db.session.commit()
    return True


def _statistics(table: str) -> tuple[float, int]:
    """What the planner believes ``table`` holds (-1: never gathered), and the live row count."""
    believed, live = db.session.execute(
        sa.text("SELECT c.reltuples, s.n_live_tup FROM pg_class c"
                " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(:name)"),
        {"name": table},
    ).one()
    return believed, live or 0
