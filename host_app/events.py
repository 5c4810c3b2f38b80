"""Emitting events: automations triggered by them run, then listeners are told."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flask import current_app

from .values import Event, EventType

log = logging.getLogger(__name__)


def event_types() -> dict[str, EventType]:
    """Every event type declared by a loaded plugin (or the host), by key."""
    return current_app.extensions["plugins"].collect_by_key("event_types", app=current_app)


def emit(type: str, key: str, contact_ids: Iterable[int] = (), payload: dict[str, Any] | None = None) -> Event:
    """Emit an event: run the automations it triggers, then call ``event_emitted`` listeners.

    ``key`` names this occurrence; emitting the same (type, key) again never
    runs an automation twice for the same contact.
    """
    from .automation_engine import run_automations

    if type not in event_types():
        raise LookupError(f"unknown event type {type!r}: declare it with the event_types hook")
    event = Event(type=type, key=str(key), contact_ids=tuple(sorted(set(contact_ids))), payload=dict(payload or {}))
    # Listeners first: one may create the contacts that automations then act on.
    manager = current_app.extensions["plugins"]
    for plugin, _, error in manager.call_each("event_emitted", app=current_app, event=event):
        if error is not None:
            log.error("plugin %s failed while handling event %s", plugin, type, exc_info=error)
    if event.contact_ids:
        run_automations(event)
    return event
