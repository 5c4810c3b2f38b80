"""Value types exchanged between the host and its plugins (see hookspecs.py); plugins import them from host_app.api."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from wtforms import Form

from .extensions import db
from .models import Contact


@dataclasses.dataclass(frozen=True)
class SettingsPage:
    """A page listed under Settings. ``endpoint`` is a Flask endpoint name."""

    title: str
    endpoint: str
    description: str = ""
    admin_only: bool = True


@dataclasses.dataclass(frozen=True)
class PageNotice:
    """A line shown at the top of every page for one signed-in agent (``page_notices``): plain ``text``, and
    optionally a link to ``url`` reading ``link_text``. ``level`` is ``"info"`` or ``"warning"``."""

    text: str
    url: str = ""
    link_text: str = ""
    level: str = "info"


@dataclasses.dataclass(frozen=True)
class ContactPanel:
    """An extra block on a contact page; ``html`` must be safe (escaped) markup."""

    title: str
    html: str


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    """One item on a contact's timeline.

    ``key`` identifies the entry across sources so the same thing seen twice
    (e.g. one e-mail in two team inboxes) is shown once.
    """

    date: datetime
    kind: str
    title: str
    key: str
    source: str = ""
    summary: str = ""
    direction: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    url: str = ""  # where the entry opens in full (e.g. the whole e-mail), if anywhere
    author: str = ""  # who wrote it (an e-mail's sender), when that is not the contact page's own person
    thread: str = ""  # entries with the same thread (one conversation) show together, older ones as one line
    attachments: int = 0  # how many files it carries (a paperclip and the count on the page)


@dataclasses.dataclass(frozen=True)
class TimelineFilter:
    """A choice above a contact's timeline (``timeline_filters``): the query parameter ``name`` takes one of
    ``choices`` (``(value, label)`` pairs); "" shows everything. The host passes the chosen values to
    ``timeline_entries`` as ``filters`` and keeps them on the "Older" link; an entry that does not match
    (``details[name]`` as text) is left out."""

    name: str
    label: str
    choices: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Person:
    """Somebody a contact provider found, with what it knows about them."""

    email: str
    name: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    we_wrote_to: bool = False
    wrote_to_us: bool = False
    automated: bool = False


class ContactProvider:
    """A source of people, e.g. the correspondents of connected mailboxes.

    Subclasses set ``key`` and ``label`` and implement ``sources`` and
    ``people``.
    """

    key: str = ""
    label: str = ""

    def sources(self) -> list[tuple[int, str]]:
        """Return ``(source_id, label)`` pairs, e.g. one per mailbox."""
        raise NotImplementedError

    def people(self, source_id: int, since: datetime | None = None) -> Iterable[Person]:
        """Yield the people of one source, seen after ``since`` when given."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class EventType:
    """An event plugins may emit.

    Events about contacts are automation triggers; set ``trigger=False`` for
    events that never name contacts (e.g. "inbox synced"), which only
    ``event_emitted`` listeners receive.
    """

    key: str
    label: str
    trigger: bool = True


@dataclasses.dataclass(frozen=True)
class Event:
    """An emitted event.

    ``key`` identifies this occurrence (e.g. the Message-ID of a reply) so
    an automation runs at most once per contact per occurrence.
    """

    type: str
    key: str
    contact_ids: tuple[int, ...] = ()
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Occurrence:
    """The event occurrence a contact is evaluated for, passed to ``Condition.evaluate_bulk`` as
    ``occurrences={contact_id: Occurrence}`` when the condition accepts that argument (after a wait).

    ``occurred_at`` is when the event happened: the payload's ``occurred_at``
    (ISO 8601) when the emitter gave one, else when it was emitted.
    """

    event_type: str
    event_key: str
    occurred_at: datetime
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


class Condition:
    """An automation condition offered by a plugin.

    Set ``key``, ``label`` and ``form_class`` (a ``wtforms.Form`` subclass
    whose ``data`` are the parameters) and implement ``evaluate``. Override
    ``evaluate_bulk`` with one set-based query when you can; the default
    calls ``evaluate`` per contact.
    """

    key: str = ""
    label: str = ""
    description: str = ""
    form_class: type[Form] = Form

    def evaluate(self, contact, params: dict[str, Any]) -> bool:
        """Return whether the condition holds for ``contact``."""
        raise NotImplementedError

    def evaluate_bulk(self, contact_ids: Iterable[int], params: dict[str, Any]) -> set[int]:
        """Return the subset of ``contact_ids`` for which the condition holds.

        A condition that cares about the event behind a check may add a third
        parameter ``occurrences=None``: after a wait the host then passes
        ``{contact_id: Occurrence}``; conditions without it are called as before.
        """
        ids = list(contact_ids)
        contacts = db.session.scalars(db.select(Contact).where(Contact.id.in_(ids))) if ids else []
        return {c.id for c in contacts if self.evaluate(c, params)}

    def describe(self, params: dict[str, Any]) -> str:
        """Return a one-line human summary of the condition with ``params``."""
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v not in (None, ""))
        return f"{self.label} ({shown})" if shown else self.label


class Action:
    """An automation action offered by a plugin: set ``key``, ``label``, ``form_class``; implement ``run``."""

    key: str = ""
    label: str = ""
    form_class: type[Form] = Form

    def run(self, contact, params: dict[str, Any]) -> str:
        """Do the action for ``contact``; return a short text for the run log."""
        raise NotImplementedError


class Audience:
    """A kind of group of contacts an automation can be run over by hand ("Run now").

    Subclasses set ``key`` and ``label`` and implement ``choices`` (the groups
    of this kind, e.g. one per tag) and ``contact_ids``. An audience that is one
    group only (e.g. "All contacts") returns one choice whose value is ``""``.
    """

    key: str = ""
    label: str = ""

    def choices(self) -> list[tuple[str, str]]:
        """Return ``(value, label)`` pairs, one per group; values are strings."""
        raise NotImplementedError

    def contact_ids(self, value: str) -> Iterable[int]:
        """Return the ids of the contacts in group ``value``; ``ValueError`` (plain words) for a bad value."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class RecurringJob:
    """A job the scheduler enqueues every ``interval`` seconds.

    ``func`` must be an importable module-level function without arguments.
    """

    name: str
    func: Callable[[], Any]
    interval: int
    description: str = ""
