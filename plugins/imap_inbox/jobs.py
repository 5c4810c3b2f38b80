"""RQ jobs: sync one inbox (at most one at a time, anywhere) and enqueue the inboxes that are due.

Job functions take ids only; passwords are read from the database inside the
job. Retries after transient failures go through ``Inbox.next_sync_at`` and
the recurring :func:`schedule_due_syncs` (the ``manage.py scheduler``), so
workers need no RQ scheduler of their own.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import LockError, RedisError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from host_app.api import app_job, db, member_of, queue, redis_connection
from plugins.mail import models as mail_models
from plugins.mail.models import Inbox

from .models import ImapInbox
from .schedule import next_regular_sync, utcnow
from .sync import run_sync

log = logging.getLogger(__name__)

LOCK_TTL = 60  # seconds; renewed every LOCK_TTL / 4 while the sync runs
DEFAULT_JOB_TIMEOUT = 6 * 3600  # an initial sync of a huge mailbox is long; it resumes anyway
STALE_STARTED_AFTER = 120  # a "started" job without its lock for this long died with its worker


def sync_job_id(inbox_id: int) -> str:
    """Deterministic per inbox and per installation: RQ job ids are global in a Redis database."""
    return f"imap_inbox-sync-{current_app.config['RQ_QUEUE']}-{int(inbox_id)}"


def _lock_name(inbox_id: int) -> str:
    return f"imap_inbox:{current_app.config['RQ_QUEUE']}:sync-lock:{int(inbox_id)}"


class SyncLock:
    """A Redis lock per inbox with a short TTL, renewed by a heartbeat thread while held.

    A worker killed with SIGKILL stops renewing, so the lock expires within
    ``LOCK_TTL`` seconds and the inbox can sync again.
    """

    def __init__(self, conn: Redis, name: str, ttl: int = LOCK_TTL):
        self.ttl = ttl
        self._lock = conn.lock(name, timeout=ttl, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def acquire(self) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._thread = threading.Thread(target=self._heartbeat, name=f"{self._lock.name}-heartbeat", daemon=True)
        self._thread.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._lock.reacquire()
            except LockError:
                log.error("sync lock %s was lost; the sync stops at the next batch", self._lock.name)
                self.lost = True
                return
            except RedisError:
                log.warning("could not renew sync lock %s; retrying", self._lock.name, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._lock.release()
        except LockError:
            pass  # expired or taken over: nothing of ours to release
        except RedisError:
            log.warning("could not release sync lock %s; it expires on its own", self._lock.name)


def sync_lock(inbox_id: int) -> SyncLock:
    return SyncLock(redis_connection(), _lock_name(inbox_id))


def sync_running(inbox_id: int) -> bool:
    """Whether some process holds the inbox's sync lock right now."""
    return bool(redis_connection().exists(_lock_name(inbox_id)))


@app_job
def sync_inbox(inbox_id: int, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Sync one inbox now unless another process already does; returns a JSON-able summary."""
    lock = sync_lock(inbox_id)
    if not lock.acquire():
        log.info("inbox %s: a sync is already running", inbox_id)
        return {"inbox_id": inbox_id, "status": "already_running"}
    try:
        return run_sync(inbox_id, on_progress=on_progress, lock=lock)
    finally:
        lock.release()


def _job_options() -> dict[str, Any]:
    return {
        "job_timeout": int(current_app.config.get("IMAP_SYNC_JOB_TIMEOUT", DEFAULT_JOB_TIMEOUT)),
        "result_ttl": 24 * 3600,
        "failure_ttl": 7 * 24 * 3600,
        "description": "imap_inbox: sync one inbox",
    }


def _existing_job(inbox_id: int) -> Job | None:
    try:
        return Job.fetch(sync_job_id(inbox_id), connection=redis_connection())
    except NoSuchJobError:
        return None


_WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)  # a sync job that has not started


def enqueue_sync(inbox_id: int, show_queued: bool = True) -> str | None:
    """Enqueue a sync of the inbox; returns the RQ job id, or None when one is already queued or running.

    ``show_queued=False``: the caller shows the inbox as queued itself, for many at once
    (:func:`mark_queued`), so a database busy with other writers holds up no enqueueing.
    """
    inbox_id = int(inbox_id)
    try:
        job = _existing_job(inbox_id)
        if job is not None:
            status = job.get_status(refresh=True)
            if status in _WAITING:
                return None
            if status == JobStatus.STARTED and not _started_job_is_dead(job, inbox_id):
                return None
            job.delete()  # finished, failed, or died with its worker: its id is free again
        queue().enqueue(sync_inbox, inbox_id, job_id=sync_job_id(inbox_id), unique=True, **_job_options())
    except DuplicateJobError:
        return None  # another process enqueued it a moment ago
    except RedisError:
        log.warning("inbox %s: Redis is not reachable; the scheduler enqueues the sync later", inbox_id, exc_info=True)
        return None
    if show_queued:
        mark_queued([inbox_id])
    return sync_job_id(inbox_id)


def sync_waiting(inbox_id: int) -> bool:
    """Whether the inbox's sync job is in the queue and has not started: it will read the mailbox as it is then."""
    job = _existing_job(int(inbox_id))
    return job is not None and job.get_status(refresh=True) in _WAITING


def _started_job_is_dead(job: Job, inbox_id: int) -> bool:
    if sync_running(inbox_id):
        return False
    if job.started_at is None:
        return False
    started = job.started_at.replace(tzinfo=UTC)  # UTC, naive in some RQ releases
    return utcnow() - started > timedelta(seconds=STALE_STARTED_AFTER)


def mark_queued(inbox_ids: list[int]) -> None:
    """Show the inboxes as queued (one statement and commit for all); a running sync keeps "syncing"."""
    if not inbox_ids:
        return
    db.session.execute(
        db.update(Inbox)
        .where(member_of(Inbox.id, [int(i) for i in inbox_ids]),
               Inbox.status.in_((mail_models.NEW, mail_models.OK, mail_models.ERROR, mail_models.NEEDS_ATTENTION)))
        .values(status=mail_models.QUEUED)
    )
    db.session.commit()


def cancel_queued_sync(inbox_id: int) -> None:
    """Drop a queued (not running) sync of the inbox, e.g. when it is deleted or disabled."""
    try:
        job = _existing_job(inbox_id)
        if job is not None and job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.SCHEDULED,
                                                                JobStatus.DEFERRED):
            job.cancel()
            job.delete()
    except RedisError:
        log.warning("inbox %s: could not cancel the queued sync (Redis unreachable)", inbox_id)


@app_job
def schedule_due_syncs() -> dict[str, Any]:
    """Enqueue a sync of every enabled inbox whose ``next_sync_at`` has come (recurring, every minute)."""
    now = utcnow()
    # Enabled inboxes that never got a schedule (e.g. created while Redis was down) are due now.
    schedulable = db.select(Inbox.id).where(
        Inbox.enabled.is_(True), Inbox.status.notin_((mail_models.NEEDS_ATTENTION, mail_models.DISABLED)))
    db.session.execute(
        db.update(ImapInbox)
        .where(ImapInbox.id.in_(schedulable), ImapInbox.next_sync_at.is_(None))
        .values(next_sync_at=now)
    )
    db.session.commit()
    due = db.session.scalars(
        db.select(ImapInbox.id)
        .where(ImapInbox.enabled.is_(True), ImapInbox.next_sync_at <= now,
               ImapInbox.status.notin_((mail_models.NEEDS_ATTENTION, mail_models.DISABLED)))
        .order_by(ImapInbox.next_sync_at)
    ).all()
    # Inboxes still waiting for a job Redis no longer has (restarted without persistence, flushed): their
    # next_sync_at already moved on, so they are not due. enqueue_sync only puts back a job that is missing.
    waiting = db.session.scalars(
        db.select(ImapInbox.id).where(ImapInbox.enabled.is_(True), ImapInbox.status == mail_models.QUEUED)
        .order_by(ImapInbox.id)
    ).all()
    enqueued = []
    for inbox_id in list(dict.fromkeys([*due, *waiting])):
        if enqueue_sync(inbox_id):
            enqueued.append(inbox_id)
            # Not due again until its next slot (the job moves it too); were the job lost, "waiting" puts it back.
            db.session.execute(
                db.update(ImapInbox).where(ImapInbox.id == inbox_id)
                .values(next_sync_at=next_regular_sync(inbox_id, now))
            )
            db.session.commit()
    if enqueued:
        log.info("enqueued syncs of inboxes %s", enqueued)
    return {"due": list(due), "enqueued": enqueued}
