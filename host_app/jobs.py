"""Background jobs on RQ: the queue, an app-aware worker, and the recurring-job scheduler.

Job functions are plain module-level functions that take ids (never secrets)
and run inside an app context. Workers build the same app, with the same
enabled plugins, as the web process.

Recurring jobs use RQ's own cron scheduler (``rq.cron.CronScheduler``, RQ ≥
2.5): one process, no extra dependency, and its registrations live in the same
Redis as the queues. Plugins declare them with the ``recurring_jobs`` hook.
"""
from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.cron import CronScheduler

from .extensions import db

log = logging.getLogger(__name__)

_process_app: Flask | None = None


def redis_connection(app: Flask | None = None) -> Redis:
    app = app or current_app
    conn = app.extensions.get("redis")
    if conn is None:
        conn = app.extensions["redis"] = Redis.from_url(app.config["REDIS_URL"])
    return conn


def queue(app: Flask | None = None) -> Queue:
    app = app or current_app
    return Queue(app.config["RQ_QUEUE"], connection=redis_connection(app))


def enqueue(func: Callable, *args: Any, job_id: str | None = None, **options: Any):
    """Put ``func(*args)`` on the app's queue; ``args`` must be ids, never secrets."""
    return queue().enqueue(func, *args, job_id=job_id, **options)


def app_job(func: Callable) -> Callable:
    """Run a job function inside an app context.

    In a worker started by ``manage.py worker`` the context is already there;
    when RQ runs the function elsewhere (a bare ``rq worker``), the app is
    built once per process from the environment.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if has_app_context():
            return func(*args, **kwargs)
        global _process_app
        if _process_app is None:
            from . import create_app

            _process_app = create_app()
        with _process_app.app_context():
            return func(*args, **kwargs)

    return wrapper


class _PromptStop:
    """RQ's worker with a command channel that stops within a second, not a minute.

    RQ listens for commands (``send_shutdown_command`` ...) on a Redis pub/sub channel, read by a thread
    that waits up to ``sleep_time`` seconds for each message; RQ passes 60. When the worker stops (a burst
    run ending, a warm shutdown) it unsubscribes, then tells the thread to end and waits for it. If the
    answer to the unsubscribe reaches the thread before it is told to end, the thread waits again, for a
    whole ``sleep_time``, which then ends only after a minute: a stopping worker hung for 60 s now and
    then (seen in the test suite's burst workers, on a loaded machine often). Everything but the wait
    is RQ's own ``subscribe``.
    """

    PUBSUB_WAIT_SECONDS = 1

    def subscribe(self):
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=self.PUBSUB_WAIT_SECONDS, daemon=True, exception_handler=self._pubsub_exception_handler)


class AppSimpleWorker(_PromptStop, SimpleWorker):
    """RQ's worker that runs each job in the worker's own process (the test suite's burst runs)."""


class AppWorker(_PromptStop, Worker):
    """A forking RQ worker that gives each work horse fresh database connections."""

    def main_work_horse(self, job, queue):  # runs in the forked child
        start_work_horse()
        return super().main_work_horse(job, queue)


def start_work_horse() -> None:
    """Set up a process just forked to run one job (RQ's work horse; the benchmark's job runner too).

    Connections inherited from the parent must not be shared across processes.
    Everything inherited (the app, its plugins, the imported modules: some
    hundreds of thousands of objects) lives as long as the horse, yet Python's
    cycle collector would walk all of it at each full collection: about a
    tenth of a large first sync's CPU (bench/README.md). Frozen, it is left
    out of every collection; the job's own garbage is collected as before.
    """
    db.engine.dispose(close=False)
    gc.freeze()


def make_worker(app: Flask, simple: bool = False, name: str | None = None) -> Worker:
    cls = AppSimpleWorker if simple else AppWorker
    return cls([queue(app)], connection=redis_connection(app), name=name)


def recurring_jobs(app: Flask) -> list:
    jobs = []
    for result in app.extensions["plugins"].hook.recurring_jobs(app=app):
        jobs.extend(result or [])
    return jobs


def make_scheduler(app: Flask) -> CronScheduler:
    """A cron scheduler with every recurring job that loaded plugins declare."""
    scheduler = CronScheduler(connection=redis_connection(app), name=f"crm-{app.config['RQ_QUEUE']}")
    for job in recurring_jobs(app):
        scheduler.register(job.func, queue_name=app.config["RQ_QUEUE"], interval=job.interval)
        log.info("scheduled %s every %ss", job.name, job.interval)
    return scheduler
