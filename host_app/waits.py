"""Wait, then check: the stored waits that have come due are evaluated in bulk, per rule, and acted on.

The scheduler's recurring job calls :func:`process_due_waits` every minute.
One query on the ``due_at`` index finds the due waits, so pending ones cost
nothing; a Redis lock lets one worker at a time process them, so no wait is
evaluated twice. Each wait completes its "waiting" run-log row: waited →
evaluated → acted (or not matched).
"""
from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa
from flask import current_app
from markupsafe import escape

from .automation_engine import RuleUnavailable, act, actions, matching_contacts
from .extensions import db
from .jobs import app_job, redis_connection
from .models import AutomationRule, AutomationRun, AutomationWait, Contact, utcnow
from .sql import member_of
from .values import ContactPanel, Occurrence

log = logging.getLogger(__name__)

BATCH = 5000  # due waits read at a time
# Seconds: a worker killed mid-batch (a power cut) holds the waits back at most this long. The holder
# renews it after every rule's waits, which the bench evaluates by the ten thousand in about two seconds.
LOCK_TIMEOUT = 60


def process_due_waits(now=None) -> dict[str, int]:
    """Evaluate every due wait; returns counts by outcome (``{}`` when another worker is at it)."""
    lock = redis_connection().lock(f"{current_app.config['RQ_QUEUE']}:automation-waits", timeout=LOCK_TIMEOUT)
    if not lock.acquire(blocking=False):
        return {}
    counts: dict[str, int] = defaultdict(int)
    try:
        while True:
            due = db.session.scalars(
                db.select(AutomationWait).where(AutomationWait.due_at <= (now or utcnow()))
                .order_by(AutomationWait.due_at, AutomationWait.id).limit(BATCH)
            ).all()
            if not due:
                break
            by_rule: dict[int, list[AutomationWait]] = defaultdict(list)
            for wait in due:
                by_rule[wait.rule_id].append(wait)
            for waits in by_rule.values():
                for outcome, n in _check(waits).items():
                    counts[outcome] += n
                lock.extend(LOCK_TIMEOUT, replace_ttl=True)
    finally:
        lock.release()
    return dict(counts)


def _check(waits: list[AutomationWait]) -> dict[str, int]:
    """Evaluate one rule's due waits in bulk (a contact waiting twice, for two occurrences, in two passes)."""
    rule = db.session.get(AutomationRule, waits[0].rule_id)
    counts: dict[str, int] = defaultdict(int)
    if not rule.enabled:  # disabled by a way that did not cancel its waits (the database, an import)
        counts["cancelled"] = cancel_waits(rule, "cancelled: the automation was disabled")
        db.session.commit()
        return counts
    passes: list[dict[int, AutomationWait]] = []
    for wait in waits:
        for one in passes:
            if wait.contact_id not in one:
                one[wait.contact_id] = wait
                break
        else:
            passes.append({wait.contact_id: wait})
    available = actions()
    for one in passes:
        occurrences = {cid: Occurrence(w.event_type, w.event_key, w.occurred_at, dict(w.payload or {}))
                       for cid, w in one.items()}
        try:
            matched = matching_contacts(rule, one, occurrences)
            error = None
        except RuleUnavailable as exc:
            matched, error = set(), str(exc)
        except Exception as exc:
            db.session.rollback()
            log.exception("automation %s: conditions failed after a wait", rule.id)
            matched, error = set(), f"conditions failed: {exc}"
        acting = sorted(matched & set(one)) if error is None else []
        contacts = {c.id: c for c in db.session.scalars(db.select(Contact).where(member_of(Contact.id, acting)))}
        started = dict(db.session.execute(
            db.select(AutomationRun.id, AutomationRun.created_at)
            .where(member_of(AutomationRun.id, [w.run_id for w in one.values()]))
        ).all())
        now = utcnow()
        updates = []
        for cid, wait in one.items():
            waited = duration(round((wait.due_at - started.get(wait.run_id, wait.occurred_at)).total_seconds()))
            if error is not None:
                status, detail = "failed", f"waited {waited}; {error}"
            elif cid not in matched:
                status, detail = "not_matched", f"waited {waited}; evaluated: conditions not met"
            else:
                status, done = act(rule, contacts[cid], available)
                detail = f"waited {waited}; evaluated: conditions met; {done}"
            updates.append({"id": wait.run_id, "status": status, "detail": detail[:2000], "created_at": now})
            counts[status] += 1
        # The log rows and the waits in a few statements, not one object each.
        db.session.flush()
        db.session.execute(sa.update(AutomationRun), updates)
        db.session.execute(sa.delete(AutomationWait).where(member_of(AutomationWait.id, [w.id for w in one.values()]))
                           .execution_options(synchronize_session=False))
        db.session.commit()
    return counts


def duration(seconds: int) -> str:
    """"3 days", "90 minutes": the largest unit that divides the time."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return "0 seconds"


def cancel_waits(rule: AutomationRule, reason: str) -> int:
    """Drop the rule's pending waits (disabled, or no longer waiting); their log rows say why. Not committed."""
    pending = db.select(AutomationWait.run_id).where(AutomationWait.rule_id == rule.id)
    db.session.execute(sa.update(AutomationRun).where(AutomationRun.id.in_(pending))
                       .values(status="cancelled", detail=reason).execution_options(synchronize_session=False))
    dropped = db.session.execute(sa.delete(AutomationWait).where(AutomationWait.rule_id == rule.id)
                                 .execution_options(synchronize_session=False))
    return dropped.rowcount


def pending_panel(contact: Contact) -> list[ContactPanel]:
    """The contact page's list of automations waiting to check this contact."""
    rows = db.session.execute(
        db.select(AutomationRule.name, AutomationWait.due_at, AutomationWait.event_type)
        .join(AutomationRule, AutomationRule.id == AutomationWait.rule_id)
        .where(AutomationWait.contact_id == contact.id).order_by(AutomationWait.due_at)
    ).all()
    if not rows:
        return []
    items = "".join(
        f"<li>{escape(row.name)}: checks on {row.due_at:%Y-%m-%d %H:%M} UTC "
        f"<span class=\"hint\">(after {escape(row.event_type)})</span></li>"
        for row in rows
    )
    return [ContactPanel("Automations waiting", f'<ul class="pending-waits">{items}</ul>')]


@app_job
def run_due_waits() -> dict[str, int]:
    """The scheduler's recurring job for waits."""
    return process_due_waits()

