"""Automations as data: export to plain JSON and import it back, all or nothing.

Integrators ship and version automations as files. An import is checked
whole before anything is written: an unknown trigger, condition or action (a
plugin not installed or not enabled) or parameters its form refuses are
reported in plain words naming them, and no automation of the file is created.
"""
from __future__ import annotations

from typing import Any

from .automation_engine import actions, conditions
from .events import event_types
from .extensions import db
from .models import AutomationRule
from .schedules import parse_daily_at
from .triggers import DAILY, MANUAL, SCHEDULED

FIELDS = ("name", "trigger", "daily_at", "wait_seconds", "match", "enabled", "conditions", "actions")
MAX_WAIT_SECONDS = 366 * 86400


class ImportRefused(Exception):
    """The file cannot be imported; ``problems`` lists each reason in plain words."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def export(rule_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """The automations (all, or ``rule_ids``) as JSON-ready dicts, oldest first."""
    stmt = db.select(AutomationRule).order_by(AutomationRule.id)
    if rule_ids:
        stmt = stmt.where(AutomationRule.id.in_(rule_ids))
    return [
        {"name": r.name, "trigger": r.trigger, "daily_at": r.daily_at, "wait_seconds": r.wait_seconds or 0,
         "match": r.match, "enabled": r.enabled,
         "conditions": [{"key": c["key"], "params": c.get("params") or {}} for c in r.conditions],
         "actions": [{"key": a["key"], "params": a.get("params") or {}} for a in r.actions]}
        for r in db.session.scalars(stmt)
    ]


def import_rules(data: Any) -> list[AutomationRule]:
    """Create the automations described by ``data`` (a list, or one object); ``ImportRefused`` creates none."""
    items = data if isinstance(data, list) else [data]
    problems: list[str] = []
    rules = []
    for n, item in enumerate(items, start=1):
        where = f"automation {n}" + (f" ({item.get('name')!r})" if isinstance(item, dict) and item.get("name") else "")
        found: list[str] = []
        rule = _read(item, found)
        problems.extend(f"{where}: {p}" for p in found)
        rules.append(rule)
    if not items:
        problems.append("the file has no automations")
    if problems:
        raise ImportRefused(problems)
    db.session.add_all(rules)
    db.session.commit()
    return rules


def _read(item: Any, problems: list[str]) -> AutomationRule | None:
    if not isinstance(item, dict):
        problems.append("is not a JSON object")
        return None
    unknown_fields = sorted(set(item) - set(FIELDS))
    if unknown_fields:
        problems.append(f"unknown fields {', '.join(unknown_fields)}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        problems.append("needs a name of 1 to 200 characters")
    trigger = item.get("trigger")
    if trigger not in event_types():
        problems.append(f"unknown trigger {trigger!r} (is its plugin installed and enabled?)")
    match = item.get("match", "all")
    if match not in ("all", "any"):
        problems.append(f"match must be 'all' or 'any', not {match!r}")
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append("enabled must be true or false")
    daily_at = item.get("daily_at")
    if trigger == DAILY:
        try:
            daily_at = parse_daily_at(daily_at).strftime("%H:%M")
        except ValueError as exc:
            problems.append(f"daily_at: {exc}")
    else:
        daily_at = None
    wait = item.get("wait_seconds", 0) or 0
    if not isinstance(wait, int) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT_SECONDS:
        problems.append(f"wait_seconds must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}")
        wait = 0
    elif wait and trigger in (MANUAL, *SCHEDULED):
        problems.append("only automations that start on an event can wait")
    parts = {kind: _parts(kind, item.get(kind, []), available, problems)
             for kind, available in (("conditions", conditions()), ("actions", actions()))}
    if not item.get("actions"):
        problems.append("needs at least one action")
    return AutomationRule(name=name, trigger=trigger, match=match, enabled=enabled, daily_at=daily_at,
                          wait_seconds=wait, conditions=parts["conditions"], actions=parts["actions"])


def _parts(kind: str, given: Any, available: dict, problems: list[str]) -> list[dict]:
    singular = kind[:-1]
    if not isinstance(given, list):
        problems.append(f"{kind} must be a list")
        return []
    parts = []
    for part in given:
        if not isinstance(part, dict) or not isinstance(part.get("key"), str):
            problems.append(f"each of the {kind} needs a key")
            continue
        impl = available.get(part["key"])
        if impl is None:
            problems.append(f"unknown {singular} {part['key']!r} (is its plugin installed and enabled?)")
            continue
        params = part.get("params") or {}
        form = impl.form_class(data=params) if isinstance(params, dict) else None
        if form is None or not form.validate():
            problems.append(f"{singular} {part['key']!r}: parameters refused: "
                            f"{form.errors if form is not None else 'params must be an object'}")
            continue
        parts.append({"key": part["key"], "params": form.data})
    return parts
