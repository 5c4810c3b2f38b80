"""Running a rule over many contacts at once ("Run now", ``automations run``): audience, preview, the job.

The conditions are evaluated once for the whole audience with each
condition's ``evaluate_bulk``; the actions then run for the matching contacts
chunk by chunk, each chunk committed with its run-log rows and the run's
counts, so a progress bar can follow and a job started again after a crash
goes on where it stopped instead of acting twice.
"""
from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError
from sqlalchemy.exc import IntegrityError

from .automation_engine import RuleUnavailable, act, acted_on, actions, matching_contacts
from .extensions import db
from .jobs import app_job, enqueue, redis_connection
from .models import AutomationBulkRun, AutomationRule, AutomationRun, Contact, utcnow
from .sql import member_of
from .triggers import MANUAL, SCHEDULED
from .values import Audience

log = logging.getLogger(__name__)

CHUNK = 500  # contacts acted on per commit: the progress bar moves, a crash loses at most one chunk's work
JOB_TIMEOUT = 3600  # seconds: tens of thousands of contacts with slow actions still finish
RUNNABLE_TRIGGERS = (MANUAL, *SCHEDULED)


class NotRunnable(Exception):
    """The rule cannot be run over an audience now; the message says why in plain words."""


def audiences() -> dict[str, Audience]:
    """Audiences offered by loaded plugins (the host's first), by key."""
    return current_app.extensions["plugins"].collect_by_key("automation_audiences", app=current_app)


def audience_options() -> list[tuple[str, str]]:
    """Every group of every audience as ``(spec, label)``, ``spec`` being ``key:value``."""
    options = []
    for key, audience in audiences().items():
        for value, label in audience.choices():
            options.append((f"{key}:{value}", label if value == "" else f"{audience.label}: {label}"))
    return options


def resolve_audience(spec: str) -> tuple[Audience, str, str]:
    """``(audience, value, label)`` for ``key:value``; ``NotRunnable`` naming what is wrong."""
    key, _, value = (spec or "").partition(":")
    available = audiences()
    audience = available.get(key)
    if audience is None:
        raise NotRunnable(f"no audience {key!r}; choose one of: {', '.join(sorted(available))}")
    labels = dict(audience.choices())
    if value not in labels:
        raise NotRunnable(f"{audience.label} has no {value!r}; choose one of the list")
    return audience, value, labels[value] if value == "" else f"{audience.label}: {labels[value]}"


def audience_contact_ids(spec: str) -> set[int]:
    audience, value, _ = resolve_audience(spec)
    try:
        return set(audience.contact_ids(value))
    except ValueError as exc:
        raise NotRunnable(str(exc)) from exc


def check_runnable(rule: AutomationRule) -> None:
    if rule.trigger not in RUNNABLE_TRIGGERS:
        raise NotRunnable(f"“{rule.name}” runs on its trigger, not by hand; set “When” to “Run by hand” or a "
                          "schedule to run it now.")
    if not rule.enabled:
        raise NotRunnable(f"“{rule.name}” is disabled; enable it to run it.")


@dataclasses.dataclass(frozen=True)
class Preview:
    evaluated: int
    matched: int


def preview(rule: AutomationRule, spec: str) -> Preview:
    """How many contacts of the audience match the rule's conditions now (nothing is changed)."""
    ids = audience_contact_ids(spec)
    try:
        matched = matching_contacts(rule, ids) if ids else set()
    except RuleUnavailable as exc:
        raise NotRunnable(str(exc)) from exc
    return Preview(evaluated=len(ids), matched=len(matched))


def create(rule: AutomationRule, spec: str, origin: str) -> AutomationBulkRun:
    """A queued run of ``rule`` over the audience ``spec`` (checked now, read again when the run starts)."""
    check_runnable(rule)
    _, _, label = resolve_audience(spec)
    run = AutomationBulkRun(rule_id=rule.id, origin=origin, audience=spec, audience_label=label[:300])
    db.session.add(run)
    db.session.commit()
    return run


def start(rule: AutomationRule, spec: str) -> AutomationBulkRun:
    """Queue a run on the RQ worker; a queue that cannot be reached fails the run in plain words."""
    run = create(rule, spec, origin="hand")
    try:
        enqueue(run_bulk_job, run.id, job_id=f"automation-bulk-{run.id}", job_timeout=JOB_TIMEOUT)
    except Exception as exc:
        log.exception("automation %s: could not queue run %s", rule.id, run.id)
        _fail(run, f"The job queue (Redis) could not be reached, so nothing ran: {type(exc).__name__}.")
    return run


@app_job
def run_bulk_job(run_id: int) -> dict | None:
    """The RQ job of a run by hand or on a schedule: takes the run's id, returns its counts."""
    run = db.session.get(AutomationBulkRun, run_id)
    if run is None:  # the automation was deleted before the job started
        return None
    if run.origin != "schedule":
        return execute(run)
    # A scheduled run still going when the next one is due: the next one is skipped, never run beside it.
    lock = schedule_lock(run.rule_id)
    if not lock.acquire(blocking=False):
        run.status = "skipped"
        run.error = "The previous run of this automation was still going."
        run.finished_at = utcnow()
        db.session.commit()
        return run.to_dict()
    try:
        return execute(run)
    finally:
        try:
            lock.release()
        except LockError:  # expired after JOB_TIMEOUT: RQ has stopped the job by then anyway
            pass


def schedule_lock(rule_id: int):
    """The Redis lock held while a scheduled run of the rule goes; it expires with the job's timeout."""
    name = f"{current_app.config['RQ_QUEUE']}:automation-schedule:{rule_id}"
    return redis_connection().lock(name, timeout=JOB_TIMEOUT)


def execute(run: AutomationBulkRun) -> dict:
    """Evaluate the audience, act on the matching contacts, keep the counts on ``run``."""
    try:
        return _execute(run)
    except NotRunnable as exc:
        db.session.rollback()
        _fail(run, str(exc))
    except Exception as exc:
        db.session.rollback()
        log.exception("automation bulk run %s failed", run.id)
        _fail(run, f"The run stopped: {type(exc).__name__}: {exc}")
        raise
    return run.to_dict()


def _execute(run: AutomationBulkRun) -> dict:
    rule = run.rule
    run.status = "running"
    db.session.commit()
    ids = audience_contact_ids(run.audience)
    try:
        matched = sorted(matching_contacts(rule, ids)) if ids else []
    except RuleUnavailable as exc:
        raise NotRunnable(str(exc)) from exc
    run.evaluated, run.matched = len(ids), len(matched)
    db.session.commit()
    available = actions()
    for start in range(0, len(matched), CHUNK):
        _act_on_chunk(run, rule, matched[start:start + CHUNK], available)
    run.status = "done"
    run.finished_at = utcnow()
    db.session.commit()
    return run.to_dict()


def _act_on_chunk(run: AutomationBulkRun, rule: AutomationRule, chunk: list[int], available: dict) -> None:
    done = acted_on(rule.id, rule.trigger, run.event_key, chunk)
    contacts = db.session.scalars(db.select(Contact).where(member_of(Contact.id, [c for c in chunk if c not in done])))
    now = utcnow()
    logged = []
    for contact in contacts:
        status, detail = act(rule, contact, available)
        logged.append({"rule_id": rule.id, "contact_id": contact.id, "event_type": rule.trigger,
                       "event_key": run.event_key, "status": status, "detail": detail[:2000], "created_at": now})
        if status == "fired":
            run.acted += 1
        else:
            run.failed += 1
    try:
        # The log rows in one statement, not an object each; in the same transaction as the actions.
        if logged:
            db.session.execute(sa.insert(AutomationRun), logged)
        db.session.commit()
    except IntegrityError:
        # Another worker ran the same chunk at the same time; its actions and counts stand.
        db.session.rollback()


def _fail(run: AutomationBulkRun, message: str) -> None:
    run.status = "failed"
    run.error = message[:2000]
    run.finished_at = utcnow()
    db.session.commit()
