"""What a synced inbox holds, in a canonical form that two syncs of the same mailbox must share exactly.

Used by the fault and reliability tests: a sync that was cut, killed or
disconnected and then finished must leave *exactly* the rows a fault-free
sync leaves: nothing lost, nothing duplicated, no field different. Database
ids, inbox ids and creation times are left out; dates are compared as UTC
(SQLite hands them back naive).
"""
from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import sqlalchemy as sa

from host_app.extensions import db
from plugins.imap_inbox.models import ImapFolder, ImapInbox
from plugins.mail.models import Folder, Message, MessageAddress

# Every stored column that comes from the mailbox (not ids, not bookkeeping).
MESSAGE_FIELDS = (
    "uid", "message_id", "dedup_key", "subject", "from_email", "from_name", "direction", "date",
    "internal_date", "size", "flags", "in_reply_to", "references", "auto_submitted", "precedence", "list_id",
    "list_unsubscribe", "x_autoreply", "content_type", "automated", "preview", "parse_error",
)


def _utc(value):
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.isoformat()
    return value


def message_rows(inbox_id: int) -> list[tuple[str, tuple]]:
    """``(folder name, canonical message tuple)`` for every stored message of the inbox, parked ones too.

    The tuple is the fields of MESSAGE_FIELDS followed by the sorted
    ``(role, email, name, date)`` addresses. Needs an app context.
    """
    m, a, f = Message.__table__, MessageAddress.__table__, Folder.__table__
    addresses: dict[int, list[tuple]] = {}
    for message_pk, role, email, name, date in db.session.execute(
        sa.select(a.c.message_pk, a.c.role, a.c.email, a.c.name, a.c.date).where(a.c.inbox_id == inbox_id)
    ):
        addresses.setdefault(message_pk, []).append((role, email, name, _utc(date)))
    rows = []
    columns = [m.c[name] for name in MESSAGE_FIELDS]
    for folder_name, message_pk, *values in db.session.execute(
        sa.select(f.c.name, m.c.id, *columns).join(f, f.c.id == m.c.folder_id).where(m.c.inbox_id == inbox_id)
    ):
        rows.append((folder_name, (*(_utc(v) for v in values), tuple(sorted(addresses.get(message_pk, []))))))
    return rows


def canonical_dump(inbox_id: int) -> dict[str, list[tuple]]:
    """Per folder, the canonical tuples sorted by UID (then by content)."""
    dump: dict[str, list[tuple]] = {}
    for folder, row in message_rows(inbox_id):
        dump.setdefault(folder, []).append(row)
    for rows in dump.values():
        rows.sort(key=repr)
        rows.sort(key=lambda r: r[0])
    return dump


def orphan_addresses(inbox_id: int) -> int:
    """Address rows whose message is gone (a half-written or half-deleted batch would leave them)."""
    m, a = Message.__table__, MessageAddress.__table__
    return db.session.execute(
        sa.select(sa.func.count()).select_from(a.outerjoin(m, m.c.id == a.c.message_pk))
        .where(a.c.inbox_id == inbox_id, m.c.id.is_(None))
    ).scalar_one()


def folder_states(inbox_id: int) -> dict[str, dict]:
    """Checkpoints of each folder row of the inbox, with the stored count next to them."""
    m = Message.__table__
    states = {}
    for folder in db.session.scalars(sa.select(ImapFolder).where(ImapFolder.inbox_id == inbox_id)):
        stored = db.session.execute(
            sa.select(m.c.uid).where(m.c.folder_id == folder.id)
        ).scalars().all()
        states[folder.name] = {
            "role": folder.role,
            "uidvalidity": folder.uidvalidity,
            "uidnext": folder.uidnext,
            "low_uid": folder.low_uid,
            "high_uid": folder.high_uid,
            "initial_done": folder.initial_done,
            "message_count": folder.message_count,
            "stored_uids": sorted(uid for uid in stored if uid > 0),
            "parked": sum(1 for uid in stored if uid <= 0),
            # Messages the server hung up on, skipped by the last run and fetched again by the next.
            "skipped_uids": sorted(int(uid) for uid in (folder.unreadable or {})),
        }
    return states


def comparable_folder_states(inbox_id: int) -> dict[str, dict]:
    """The checkpoint fields two completed syncs of the same mailbox agree on.

    ``low_uid``/``high_uid`` are left out: an inbox synced incrementally keeps
    the lowest and highest UID it ever saw, one synced from scratch the current ones.
    """
    keep = ("role", "uidvalidity", "uidnext", "initial_done", "message_count", "stored_uids", "parked")
    return {name: {k: state[k] for k in keep} for name, state in folder_states(inbox_id).items()}


def inbox_row(inbox_id: int) -> ImapInbox:
    db.session.expire_all()
    return db.session.get(ImapInbox, inbox_id)


def diff_dumps(got: dict[str, list[tuple]], want: dict[str, list[tuple]], limit: int = 6) -> str:
    """A short human description of how two dumps differ ('' when equal)."""
    lines = []
    for folder in sorted(set(got) | set(want)):
        have, expected = Counter(got.get(folder, [])), Counter(want.get(folder, []))
        extra = list((have - expected).elements())
        missing = list((expected - have).elements())
        if extra or missing:
            lines.append(f"{folder}: {len(got.get(folder, []))} stored, {len(want.get(folder, []))} expected, "
                         f"{len(missing)} missing, {len(extra)} extra or different")
            for row in missing[:limit]:
                lines.append(f"  missing  uid={row[0]} id={row[1]!r} subject={str(row[3])[:50]!r}")
            for row in extra[:limit]:
                lines.append(f"  extra    uid={row[0]} id={row[1]!r} subject={str(row[3])[:50]!r}")
    return "\n".join(lines)


def consistency_problems(inbox_id: int, server_uids: dict[str, list[int]], batch: int | None = None) -> list[str]:
    """What is wrong with what an interrupted sync left ([] when nothing).

    * no address row without its message;
    * a folder still in its initial sync stores exactly the server's UIDs from
      its checkpoint ``low_uid`` up (batches are newest first and all-or-nothing),
      and its ``message_count`` says how many that is;
    * with ``batch``, such a folder holds whole batches only.
    """
    problems = []
    if orphan_addresses(inbox_id):
        problems.append(f"{orphan_addresses(inbox_id)} address rows without their message")
    for name, state in folder_states(inbox_id).items():
        if state["initial_done"]:
            continue
        stored = state["stored_uids"]
        if state["low_uid"] is None:
            if stored:
                problems.append(f"{name}: {len(stored)} messages stored but no checkpoint")
            continue
        expected = [uid for uid in server_uids.get(name, []) if uid >= state["low_uid"]]
        if stored != expected:
            problems.append(f"{name}: checkpoint low_uid={state['low_uid']} means {len(expected)} stored, "
                            f"but {len(stored)} are ({len(set(stored) - set(expected))} unexpected)")
        if state["message_count"] != len(stored):
            problems.append(f"{name}: message_count={state['message_count']} but {len(stored)} stored")
        if batch and len(stored) % batch and len(stored) != len(server_uids.get(name, [])):
            problems.append(f"{name}: {len(stored)} stored is not a whole number of batches of {batch}")
    return problems
