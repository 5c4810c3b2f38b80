"""Settings other plugins keep per mailbox, on whichever transport's form and command line (hookspecs.py).

A transport knows none of them: it asks for the fields and options, hands what
was submitted to ``save`` inside its own transaction, and merges ``details``
into its listings. The plugin that owns a setting stores it in its own table,
so the setting comes and goes with that plugin.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import click
from flask import current_app
from wtforms.fields.core import UnboundField


@dataclasses.dataclass(frozen=True)
class MailboxField:
    """One setting as a form field: ``name`` is the setting's, ``field`` an unbound WTForms field."""

    name: str
    field: UnboundField


@dataclasses.dataclass(frozen=True)
class MailboxDetail:
    """One value a plugin keeps about a mailbox, under ``key`` in listings (JSON-ready, never a secret).

    ``note``: a few words a transport's list page shows beside the mailbox (plain text), or None.
    """

    inbox_id: int
    key: str
    value: Any
    note: str | None = None


def _hook():
    return current_app.extensions["plugins"].hook


def form_fields(inbox_id: int | None) -> list[MailboxField]:
    """The fields the plugins add to the connect (``inbox_id`` None) or edit form of a mailbox."""
    return [item for result in _hook().mailbox_form_fields(app=current_app, inbox_id=inbox_id)
            for item in result or []]


def cli_options(app) -> list[click.Option]:
    """The options the plugins add to a transport's ``connect`` command (called while commands are built)."""
    hook = app.extensions["plugins"].hook
    return [option for result in hook.mailbox_cli_options(app=app) for option in result or []]


def save(inbox_id: int, values: Mapping[str, Any]) -> set[str]:
    """Let each plugin store its settings of ``inbox_id`` (uncommitted); the names of those that changed."""
    changed: set[str] = set()
    for result in _hook().save_mailbox_settings(app=current_app, inbox_id=inbox_id, values=dict(values)):
        changed.update(result or [])
    return changed


def details(inbox_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """``{inbox_id: {key: value}}`` of what the plugins keep about these mailboxes (every id present)."""
    ids = list(inbox_ids)
    found: dict[int, dict[str, Any]] = {inbox_id: {} for inbox_id in ids}
    for item in _details(ids):
        found[item.inbox_id].setdefault(item.key, item.value)
    return found


def notes(inbox_ids: Iterable[int]) -> dict[int, list[str]]:
    """``{inbox_id: [note, ...]}``: what a list page shows beside each of these mailboxes (every id present)."""
    ids = list(inbox_ids)
    found: dict[int, list[str]] = {inbox_id: [] for inbox_id in ids}
    for item in _details(ids):
        if item.note:
            found[item.inbox_id].append(item.note)
    return found


def _details(inbox_ids: list[int]) -> Iterator[MailboxDetail]:
    asked = set(inbox_ids)
    for result in _hook().mailbox_details(app=current_app, inbox_ids=inbox_ids):
        yield from (item for item in result or [] if item.inbox_id in asked)
