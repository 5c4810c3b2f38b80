"""Automations on a schedule: "Every hour" and "Every day at HH:MM", in the instance's time zone.

The scheduler's recurring job looks every minute for rules whose latest
scheduled time has no run yet and starts one over all contacts. The unique
(rule, slot) of ``automation_bulk_run`` makes that one run per slot however
many ticks or schedulers see it; a time missed while the scheduler was down
is made up once, and a slot from before the rule existed is never run.
"""
from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from sqlalchemy.exc import IntegrityError

from .bulk_runs import JOB_TIMEOUT, run_bulk_job
from .extensions import db
from .jobs import app_job, enqueue
from .models import AutomationBulkRun, AutomationRule, utcnow
from .triggers import DAILY, HOURLY, SCHEDULED

log = logging.getLogger(__name__)

_HH_MM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def instance_zone() -> ZoneInfo:
    """The instance's time zone (``CRM_TIME_ZONE``, e.g. ``Europe/Paris``; UTC when unset)."""
    name = current_app.config.get("TIME_ZONE") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"CRM_TIME_ZONE {name!r} is not a time zone; use a name such as Europe/Paris") from None


def parse_daily_at(text: str | None) -> time:
    """``time`` from "HH:MM" (24-hour); ``ValueError`` in plain words otherwise."""
    match = _HH_MM.fullmatch((text or "").strip())
    if not match:
        raise ValueError("Enter the time as HH:MM (24-hour), e.g. 09:30.")
    return time(int(match.group(1)), int(match.group(2)))


def latest_slot(rule: AutomationRule, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The latest scheduled time of ``rule`` at or before ``now``, in UTC; ``None`` for other triggers."""
    local = now.astimezone(zone)
    if rule.trigger == HOURLY:
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if rule.trigger == DAILY:
        at = parse_daily_at(rule.daily_at)
        slot = datetime.combine(local.date(), at, tzinfo=zone)
        if slot > local:
            slot = datetime.combine(local.date() - timedelta(days=1), at, tzinfo=zone)
        return slot.astimezone(UTC)
    return None


def create_due_runs(now: datetime | None = None) -> list[AutomationBulkRun]:
    """A queued run for every enabled scheduled rule whose latest slot has none yet."""
    now = now or utcnow()
    zone = instance_zone()
    rules = db.session.scalars(
        db.select(AutomationRule).where(AutomationRule.trigger.in_(SCHEDULED), AutomationRule.enabled)
    ).all()
    created = []
    for rule in rules:
        try:
            slot = latest_slot(rule, now, zone)
        except ValueError:
            log.error("automation %s: its time %r is not HH:MM; not run", rule.id, rule.daily_at)
            continue
        if slot is None or slot < rule.created_at:
            continue
        key = slot.isoformat()
        taken = db.select(AutomationBulkRun.id).where(AutomationBulkRun.rule_id == rule.id,
                                                      AutomationBulkRun.slot == key)
        if db.session.scalar(taken) is not None:
            continue
        run = AutomationBulkRun(rule_id=rule.id, origin="schedule", slot=key, audience="all:",
                                audience_label="All contacts")
        db.session.add(run)
        try:
            db.session.commit()
        except IntegrityError:  # another scheduler's tick took this slot a moment ago
            db.session.rollback()
            continue
        created.append(run)
    return created


@app_job
def run_due_schedules() -> int:
    """The scheduler's recurring job: start the scheduled runs that are due; returns how many."""
    runs = create_due_runs()
    for run in runs:
        enqueue(run_bulk_job, run.id, job_id=f"automation-bulk-{run.id}", job_timeout=JOB_TIMEOUT)
    return len(runs)
