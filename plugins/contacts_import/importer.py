"""Turn the people of a contact provider into contacts: set-based, idempotent, without junk.

The steps of one import:

1. the provider (found through the ``contact_providers`` hook) returns its
   people, aggregated in one query;
2. team, machine, blocked and bulk-only addresses and the inbox's policy
   filter them in memory;
3. one query per few thousand candidates finds which already are contacts;
4. the rest are inserted with one executemany that ignores duplicates
   (``INSERT .. ON CONFLICT DO NOTHING``), so two imports racing never fail;
5. ``contact_created`` is called in chunks, so automations see the new contacts.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import lazyload

from host_app.api import (
    Agent,
    Contact,
    ContactProvider,
    Person,
    bulk_insert_or_ignore,
    db,
    member_of,
    normalize_email,
    utcnow,
)
from plugins.mail.models import Inbox
from plugins.mail.names import clean_name
from plugins.mail.people import PROVIDER_KEY, source_label
from plugins.mail.statistics import refresh_if_stale

from .models import (
    DONE,
    FAILED,
    POLICIES,
    POLICY_WE_WROTE,
    RUNNING,
    BlockedEntry,
    ImportState,
)
from .rules import Exclusions

log = logging.getLogger(__name__)

HOOK_CHUNK = 1000  # contacts per contact_created call
# Contacts per INSERT: the row dicts and the driver's parameters of a whole mailbox's 15,000 contacts at once
# were the import's peak memory (14 MB at 100k messages, on top of the sync's in the follow-up worker).
INSERT_CHUNK = 1000
SAMPLE_SIZE = 20

AUTOMATED = "only bulk or automatic mail"
POLICY = "not e-mailed by us (policy)"


@dataclasses.dataclass
class Plan:
    """What an import would do: the people to create, names to fill, and who was left out why."""

    to_create: list[Person]
    to_name: list[tuple[int, str]]  # (contact id, name) of existing contacts without a name
    existing: int
    skipped: Counter
    cursor: int | None = None

    def sample(self, size: int = SAMPLE_SIZE) -> list[dict[str, str]]:
        """A few of the people to create, named ones and recent ones first."""
        ordered = sorted(
            self.to_create, key=lambda p: (not p.name, -_timestamp(p.last_seen), p.email)
        )
        return [{"email": p.email, "name": p.name} for p in ordered[:size]]


def _timestamp(value: datetime | None) -> float:
    try:
        return value.timestamp() if value else float("-inf")
    except (OverflowError, OSError, ValueError):
        return float("-inf")


# --------------------------------------------------------------------------- providers and exclusions


def providers() -> dict[str, ContactProvider]:
    """Every contact provider of the loaded plugins, by key."""
    return current_app.extensions["plugins"].collect_by_key("contact_providers", app=current_app)


def mailbox_provider() -> ContactProvider:
    provider = providers().get(PROVIDER_KEY)
    if provider is None:
        raise LookupError("no contact provider for connected mailboxes is loaded")
    return provider


def team_addresses() -> set[str]:
    """Every connected inbox's address and login, and every agent's address."""
    found: set[str] = set()
    for email, username in db.session.execute(sa.select(Inbox.email, Inbox.username)):
        found.update(normalize_email(v) for v in (email, username) if v and "@" in v)
    found.update(normalize_email(e) for e in db.session.scalars(sa.select(Agent.email)) if e)
    return found


def current_exclusions() -> Exclusions:
    blocked = db.session.execute(sa.select(BlockedEntry.kind, BlockedEntry.value)).all()
    return Exclusions.build(
        team_addresses(), blocked=[tuple(b) for b in blocked],
        public_domains=current_app.config.get("CONTACTS_IMPORT_PUBLIC_DOMAINS", ()),
    )


# --------------------------------------------------------------------------- planning


def select_people(
    people: Iterable[Person], policy: str, exclusions: Exclusions, skipped: Counter | None = None
) -> dict[str, Person]:
    """The people who may become contacts, by normalized address (duplicates merged)."""
    skipped = skipped if skipped is not None else Counter()
    kept: dict[str, Person] = {}
    for person in people:
        email = normalize_email(person.email)
        reason = exclusions.reason(email)
        if reason is None and person.automated and not person.we_wrote_to:
            reason = AUTOMATED
        if reason is None and policy == POLICY_WE_WROTE and not person.we_wrote_to:
            reason = POLICY
        if reason is not None:
            skipped[reason] += 1
            continue
        name = clean_name(person.name, email)
        other = kept.get(email)
        if other is not None:  # the provider gave the address twice (e.g. in two spellings)
            name = other.name or name
        if email != person.email or name != person.name:
            person = dataclasses.replace(person, email=email, name=name)
        kept[email] = person
    return kept


def existing_contacts(emails: Iterable[str]) -> Iterator[tuple[int, str, str, bool]]:
    """``(id, email, name, name_edited)`` of the contacts among ``emails``, in one query."""
    yield from db.session.execute(
        sa.select(Contact.id, Contact.email, Contact.name, Contact.name_edited).where(member_of(Contact.email, emails))
    )


def plan(people: Iterable[Person], policy: str, exclusions: Exclusions) -> Plan:
    skipped: Counter = Counter()
    kept = select_people(people, policy, exclusions, skipped)
    to_name: list[tuple[int, str]] = []
    existing = 0
    for contact_id, email, name, name_edited in existing_contacts(kept):
        person = kept.pop(email)
        existing += 1
        if not name and not name_edited and person.name:
            to_name.append((contact_id, person.name))
    return Plan(to_create=list(kept.values()), to_name=to_name, existing=existing, skipped=skipped)


def inbox_state(inbox_id: int) -> ImportState:
    state = db.session.get(ImportState, inbox_id)
    if state is None:
        state = ImportState(inbox_id=inbox_id)
        db.session.add(state)
        db.session.flush()
    return state


def plan_inbox(inbox: Inbox, full: bool = True, state: ImportState | None = None) -> Plan:
    """What importing ``inbox`` would do: everybody (``full``) or people in messages after the watermark."""
    provider = mailbox_provider()
    state = state or db.session.get(ImportState, inbox.id)
    policy = state.policy if state and state.policy in POLICIES else next(iter(POLICIES))
    watermark = None if full or state is None else state.last_message_id
    cursor = provider.cursor(inbox.id) if hasattr(provider, "cursor") else None
    if cursor is not None:
        people = provider.people(inbox.id, after_cursor=watermark, upto_cursor=cursor)
    else:  # a provider without cursors: people seen since the last run
        since = None if full or state is None else state.last_run_at
        people = provider.people(inbox.id, since=since)
    result = plan(people, policy, current_exclusions())
    result.cursor = cursor
    return result


def dry_run(inbox: Inbox, sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """The JSON-ready preview shown before Create users is switched on."""
    result = plan_inbox(inbox, full=True)
    return {
        "inbox_id": inbox.id,
        "would_create": len(result.to_create),
        "sample": result.sample(sample_size),
        "already_contacts": result.existing,
        "skipped": dict(sorted(result.skipped.items())),
    }


# --------------------------------------------------------------------------- writing


def create_contacts(people: list[Person], source: str, owner_id: int | None) -> list[int]:
    """Insert contacts for ``people`` set-based; return the ids actually created.

    Addresses that became contacts in the meantime (another import, an agent)
    are skipped by the database (``ON CONFLICT DO NOTHING``), never raised as errors.
    """
    if not people:
        return []
    now = utcnow()
    source = source[:200]
    created: list[int] = []
    for start in range(0, len(people), INSERT_CHUNK):
        rows = [
            {"email": p.email, "name": p.name, "name_edited": False, "source": source, "owner_id": owner_id,
             "attributes": {}, "created_at": now}
            for p in people[start:start + INSERT_CHUNK]
        ]
        inserted = bulk_insert_or_ignore(Contact.__table__, rows, returning=[Contact.__table__.c.id])
        created += [row.id for row in inserted]
    return created


def fill_names(to_name: list[tuple[int, str]]) -> None:
    """Give unnamed contacts the name found in the mail; names agents typed are never touched."""
    if not to_name:
        return
    table = Contact.__table__
    stmt = (
        table.update()
        .where(table.c.id == sa.bindparam("contact_id"), table.c.name == "", table.c.name_edited == sa.false())
        .values(name=sa.bindparam("new_name"))
    )
    db.session.execute(stmt, [{"contact_id": cid, "new_name": name} for cid, name in to_name])


def announce(contact_ids: list[int], state: ImportState | None = None) -> None:
    """Call ``contact_created`` in chunks (the host runs "Contact created" automations)."""
    hook = current_app.extensions["plugins"].hook
    for start in range(0, len(contact_ids), HOOK_CHUNK):
        chunk = contact_ids[start:start + HOOK_CHUNK]
        contacts = db.session.scalars(
            # Tags load only if a listener asks (new contacts have none): 1,000 objects, one query.
            sa.select(Contact).where(member_of(Contact.id, chunk)).options(lazyload(Contact.tag_rows))
        ).all()
        hook.contact_created(app=current_app, contacts=sorted(contacts, key=lambda c: c.id))
        if state is not None:
            state.progress_done = min(start + len(chunk), state.progress_total)
        db.session.commit()


def import_inbox(inbox_id: int, full: bool = False) -> dict[str, Any]:
    """Create contacts from inbox ``inbox_id``: everybody when ``full`` or never run, else the newcomers.

    Commits. Returns ``{"inbox_id", "created", "named", "already_contacts", "skipped", "full"}``.
    """
    inbox = db.session.get(Inbox, inbox_id)
    if inbox is None:
        raise LookupError(f"there is no connected inbox with id {inbox_id}")
    state = inbox_state(inbox_id)
    full = full or state.last_message_id is None
    state.status, state.error = RUNNING, None
    state.progress_done = state.progress_total = 0
    db.session.commit()
    try:
        # The people query joins every message of the inbox: planned with the statistics of the empty tables a
        # big first sync started from, it takes seconds instead of one.
        refresh_if_stale(inbox_id, None if full else state.last_message_id)
        result = plan_inbox(inbox, full=full, state=state)
        state.progress_total = len(result.to_create)
        created = create_contacts(result.to_create, source_label(inbox), inbox.owner_id)
        fill_names(result.to_name)
        if result.cursor is not None:
            state.last_message_id = result.cursor
        state.last_created = len(created)
        state.total_created += len(created)
        state.last_run_at = utcnow()
        db.session.commit()
        announce(created, state)
        state.status = DONE
        state.progress_done = state.progress_total = len(created)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        _record_failure(inbox_id, exc)
        raise
    log.info("contacts import of inbox %s: %d created (%s)", inbox_id, len(created), "full" if full else "new mail")
    return {
        "inbox_id": inbox_id,
        "created": len(created),
        "named": len(result.to_name),
        "already_contacts": result.existing,
        "skipped": dict(sorted(result.skipped.items())),
        "full": full,
    }


def _record_failure(inbox_id: int, exc: Exception) -> None:
    state = inbox_state(inbox_id)
    state.status = FAILED
    state.error = f"The import stopped: {exc.__class__.__name__}: {exc}"[:2000]
    db.session.commit()


def forget_watermarks(inbox_ids: Iterable[int] | None = None) -> None:
    """Make the next import of these inboxes (default: all) read the whole mailbox again."""
    stmt = sa.update(ImportState).values(last_message_id=None)
    if inbox_ids is not None:
        stmt = stmt.where(ImportState.inbox_id.in_(list(inbox_ids)))
    db.session.execute(stmt)

