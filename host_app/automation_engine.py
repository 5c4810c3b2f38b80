"""Runs automation rules for an event: set-based conditions, per-contact actions, a log row each."""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import AutomationRule, AutomationRun, AutomationWait, Contact, utcnow
from .sql import member_of
from .values import Action, Condition, Event, Occurrence

log = logging.getLogger(__name__)


def conditions() -> dict[str, Condition]:
    """Conditions offered by loaded plugins, by key (the first plugin to claim a key wins)."""
    return current_app.extensions["plugins"].collect_by_key("automation_conditions", app=current_app)


def actions() -> dict[str, Action]:
    """Actions offered by loaded plugins, by key."""
    return current_app.extensions["plugins"].collect_by_key("automation_actions", app=current_app)


class RuleUnavailable(Exception):
    """A rule uses a condition or action whose plugin is not loaded."""


def takes_occurrences(condition: Condition) -> bool:
    """Whether the condition's ``evaluate_bulk`` has the ``occurrences`` parameter (added later, optional)."""
    try:
        return "occurrences" in inspect.signature(condition.evaluate_bulk).parameters
    except (TypeError, ValueError):
        return False


def matching_contacts(rule: AutomationRule, contact_ids: Iterable[int],
                      occurrences: dict[int, Occurrence] | None = None) -> set[int]:
    """Return the contacts among ``contact_ids`` for which the rule's conditions hold.

    ``occurrences`` (after a wait) goes to the conditions whose ``evaluate_bulk`` takes it.
    """
    ids = set(contact_ids)
    if not rule.conditions:
        return ids
    available = conditions()
    results = []
    for item in rule.conditions:
        condition = available.get(item["key"])
        if condition is None:
            raise RuleUnavailable(f"condition {item['key']!r} is not available (its plugin is disabled or missing)")
        params = item.get("params") or {}
        if occurrences is not None and takes_occurrences(condition):
            found = condition.evaluate_bulk(sorted(ids), params, occurrences=occurrences)
        else:
            found = condition.evaluate_bulk(sorted(ids), params)
        results.append(set(found) & ids)
    if rule.match == "any":
        return set().union(*results)
    return set.intersection(*results)


def run_automations(event: Event) -> dict[str, int]:
    """Evaluate every enabled rule triggered by ``event`` for the event's contacts."""
    counts = {"fired": 0, "not_matched": 0, "failed": 0, "skipped": 0, "waiting": 0}
    rules = db.session.scalars(
        db.select(AutomationRule).where(AutomationRule.trigger == event.type, AutomationRule.enabled)
    ).all()
    for rule in rules:
        for status, n in run_rule(rule, event).items():
            counts[status] += n
    return counts


def acted_on(rule_id: int, event_type: str, event_key: str, contact_ids: Iterable[int]) -> set[int]:
    """The contacts among ``contact_ids`` this rule already ran for on this occurrence (once per occurrence)."""
    return set(db.session.scalars(db.select(AutomationRun.contact_id).where(
        AutomationRun.rule_id == rule_id,
        AutomationRun.event_type == event_type,
        AutomationRun.event_key == event_key,
        member_of(AutomationRun.contact_id, contact_ids),
    )))


def run_rule(rule: AutomationRule, event: Event) -> dict[str, int]:
    counts = {"fired": 0, "not_matched": 0, "failed": 0, "skipped": 0, "waiting": 0}
    existing = set(db.session.scalars(db.select(Contact.id).where(member_of(Contact.id, event.contact_ids))))
    done = acted_on(rule.id, event.type, event.key, existing)
    todo = existing - done
    counts["skipped"] = len(done)
    if not todo:
        return counts
    if rule.wait_seconds:
        _start_waits(rule, event, todo, counts)
        return counts
    try:
        matched = matching_contacts(rule, todo)
    except Exception as exc:
        log.exception("automation %s: conditions failed", rule.id)
        _log_runs(rule, event, {cid: ("failed", f"conditions failed: {exc}") for cid in todo}, counts)
        return counts
    available_actions = actions()
    outcome: dict[int, tuple[str, str]] = {}
    for cid in sorted(todo):
        if cid not in matched:
            outcome[cid] = ("not_matched", "conditions not met")
            continue
        outcome[cid] = act(rule, db.session.get(Contact, cid), available_actions)
    _log_runs(rule, event, outcome, counts)
    return counts


def act(rule: AutomationRule, contact: Contact, available: dict[str, Action]) -> tuple[str, str]:
    """Run the rule's actions for one contact (changes are not committed): ``(status, detail)`` for the run log."""
    notes = []
    for item in rule.actions:
        action = available.get(item["key"])
        if action is None:
            return "failed", f"action {item['key']!r} is not available (its plugin is disabled or missing)"
        try:
            notes.append(action.run(contact, item.get("params") or {}) or action.label)
        except Exception as exc:
            log.exception("automation %s: action %s failed", rule.id, item["key"])
            return "failed", f"{action.label} failed: {exc}"
    return "fired", "; ".join(notes)


def occurred_at(event: Event, contact_id: int, default: datetime) -> datetime:
    """When the event happened for the contact: the payload's ``occurred_at``, one ISO 8601 time or
    ``{"<contact id>": time}``, when given and readable; else ``default`` (when it was emitted)."""
    given = event.payload.get("occurred_at")
    if isinstance(given, dict):
        given = given.get(str(contact_id))
    if given:
        try:
            when = datetime.fromisoformat(str(given))
        except ValueError:
            return default
        if when.tzinfo is not None:
            return when
    return default


def _start_waits(rule: AutomationRule, event: Event, todo: set[int], counts: dict) -> None:
    """Log "waiting" for each contact and store the wait; the check happens when it is due (waits.py)."""
    now = utcnow()
    due = now + timedelta(seconds=rule.wait_seconds)
    detail = f"waiting until {due:%Y-%m-%d %H:%M} UTC"
    payload = _json_safe(event.payload)
    try:
        # Thousands of contacts in one event: a few statements, not an object each.
        runs = db.session.execute(
            sa.insert(AutomationRun).returning(AutomationRun.id, AutomationRun.contact_id),
            [{"rule_id": rule.id, "contact_id": cid, "event_type": event.type, "event_key": event.key,
              "status": "waiting", "detail": detail, "created_at": now} for cid in sorted(todo)],
        ).all()
        db.session.execute(sa.insert(AutomationWait), [
            {"rule_id": rule.id, "contact_id": cid, "run_id": run_id, "event_type": event.type,
             "event_key": event.key, "payload": payload, "occurred_at": occurred_at(event, cid, now), "due_at": due}
            for run_id, cid in runs
        ])
        db.session.commit()
        counts["waiting"] += len(todo)
    except IntegrityError:
        # Another worker handled the same event at the same time; its waits stand.
        db.session.rollback()
        counts["skipped"] += len(todo)


def _json_safe(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if isinstance(v, str | int | float | bool | list | dict | None)}


def _log_runs(rule: AutomationRule, event: Event, outcome: dict[int, tuple[str, str]], counts: dict) -> None:
    for cid, (status, detail) in outcome.items():
        db.session.add(
            AutomationRun(
                rule_id=rule.id,
                contact_id=cid,
                event_type=event.type,
                event_key=event.key,
                status=status,
                detail=detail[:2000],
            )
        )
        counts[status] += 1
    try:
        db.session.commit()
    except IntegrityError:
        # Another worker handled the same event at the same time; its log and actions stand.
        db.session.rollback()
        counts["skipped"] += len(outcome)
        for status, _ in outcome.values():
            counts[status] -= 1
