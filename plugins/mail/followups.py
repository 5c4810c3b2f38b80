"""Follow-up jobs of a sync run: how the readers of mail put their heavy work on RQ from ``mailbox_synced``.

The mail core's ``mailbox_synced`` hook runs inside the transport's sync job,
right after the run is committed. A reader's implementation only decides
whether there is work and enqueues a small job of its own with
:func:`enqueue_follow_up` (its arguments are ids: the inbox and the run).
So the sync ends as soon as its mail is stored, and a reader that fails fails
its own job, never the sync run.

**Order.** Some readers produce what others read: ``contacts_import`` creates
the contacts that ``reply_condition``'s "contact replied" events name, and an
event without its contact runs no automation for it. Such a reader enqueues
with ``prepares=True`` and marks its hook implementation ``tryfirst``, so its
job of a run exists before the others' of the same run are enqueued; those
then wait for it through RQ's ``depends_on``. ``allow_failure`` is set: a
failed import only leaves its contacts uncreated, it never holds back the
matching of replies.

**Bounds.** A reader's job may run long after its run, when later runs have
stored more mail whose preparing jobs have not run yet. A job that must not
get ahead of them (the matching: a reply from someone the next import makes a
contact) takes :func:`newest_message_id` at hook time as its bound: the
transport holds the inbox's next run back until the hook returns, so that is
exactly what this run and those before it stored.

**Duplicates.** One job per reader and run (the job id carries the run id, so
a run announced twice enqueues nothing twice). Two quick syncs of one inbox
make two jobs of each reader, which may run at the same time on two workers.
Each reader's job therefore starts from a watermark of its own (the import's
last message id, the matcher's cursor) and writes with insert-or-ignore under
a lock or in turns, so the later job finds only what the earlier one left and
nothing is created or announced twice. The readers' own modules say how.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError
from rq.job import Dependency, Job

from host_app.api import db, enqueue, redis_connection

from .models import Message

log = logging.getLogger(__name__)

JOB_TIMEOUT = 3600  # the matching of a first sync of 300k messages takes seconds; this is a safety net
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600
# How long a run's preparing jobs are remembered for the jobs that wait on them: all of a run's follow-ups
# are enqueued in the one hook call, so minutes would do; a day costs nothing.
PREPARING_TTL = 24 * 3600


def follow_up_job_id(func: Callable, run_id: int) -> str:
    """One id per reader's job function, run and installation (RQ job ids are global in a Redis database)."""
    name = f"{func.__module__}.{func.__qualname__}".replace(".", "_")  # RQ ids: letters, digits, _ and -
    return f"mail-followup-{current_app.config['RQ_QUEUE']}-{name}-{int(run_id)}"


def _preparing_key(run_id: int) -> str:
    return f"mail:{current_app.config['RQ_QUEUE']}:followups:{int(run_id)}:preparing"


def newest_message_id(inbox_id: int) -> int:
    """The inbox's highest stored message id (0 when it has none); see "Bounds" above."""
    return db.session.scalar(sa.select(sa.func.max(Message.id)).where(Message.inbox_id == inbox_id)) or 0


def enqueue_follow_up(func: Callable, inbox_id: int, run_id: int, *ids: int, description: str,
                      prepares: bool = False) -> Job | None:
    """Enqueue ``func(inbox_id, run_id, *ids)`` after the sync run ``run_id``; returns the job.

    ``prepares``: other readers read what this job writes, so their jobs of the
    same run wait for it (see the module's docstring). None when the run's job
    of ``func`` was enqueued already or Redis cannot be reached: the next sync's
    follow-up then picks up what this one would have done, since each starts
    from where the last one stopped.
    """
    options: dict[str, Any] = {
        "job_id": follow_up_job_id(func, run_id),
        "description": description,
        "job_timeout": JOB_TIMEOUT,
        "result_ttl": RESULT_TTL,
        "failure_ttl": FAILURE_TTL,
    }
    try:
        conn = redis_connection()
        # RQ's unique=True refuses dependencies; a run's hook is called once, so looking first is enough.
        if Job.exists(options["job_id"], connection=conn):
            return None
        if not prepares:
            preparing = sorted(job_id.decode() for job_id in conn.smembers(_preparing_key(run_id)))
            if preparing:
                options["depends_on"] = Dependency(jobs=preparing, allow_failure=True)
        job = enqueue(func, int(inbox_id), int(run_id), *(int(i) for i in ids), **options)
        if prepares:
            with conn.pipeline() as pipe:
                pipe.sadd(_preparing_key(run_id), job.id)
                pipe.expire(_preparing_key(run_id), PREPARING_TTL)
                pipe.execute()
    except RedisError:
        log.warning("inbox %s: Redis is not reachable; %s of sync run %s waits for the next sync",
                    inbox_id, description, run_id, exc_info=True)
        return None
    return job
