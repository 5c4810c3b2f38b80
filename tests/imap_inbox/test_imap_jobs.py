"""RQ jobs: one sync per inbox anywhere, deterministic job ids, schedules, backoff, end to end on a worker."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from redis import Redis
from rq.job import Job

from host_app.extensions import db
from host_app.jobs import make_worker, queue, redis_connection
from plugins.imap_inbox import jobs, schedule
from plugins.imap_inbox.models import ImapInbox
from tests.support import ROOT
from tests.support.imap_helpers import connect_inbox, make_owner, message, stored
from tests.support.redis_dump import redis_dump

UTC = dt.UTC


def set_inbox(app, inbox_id, **values):
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        for name, value in values.items():
            setattr(inbox, name, value)
        db.session.commit()


def get_inbox(app, inbox_id) -> ImapInbox:
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        db.session.expunge(inbox)
        return inbox


def test_create_enqueues_one_job_with_only_the_id(app, mailbox, owner):
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        assert queue().job_ids == [jobs.sync_job_id(inbox_id)]
        job = Job.fetch(jobs.sync_job_id(inbox_id), connection=redis_connection())
        assert job.args == (inbox_id,) and job.kwargs == {}
        assert job.func_name == "plugins.imap_inbox.jobs.sync_inbox"
        assert job.timeout >= 3600  # a long initial sync must not be killed after RQ's default 180 s
        # Already queued: no second job.
        assert jobs.enqueue_sync(inbox_id) is None
        assert queue().job_ids == [jobs.sync_job_id(inbox_id)]
    assert get_inbox(app, inbox_id).status == "queued"


def test_password_is_nowhere_in_redis(app, mailbox, owner):
    connect_inbox(app, mailbox, owner)
    secret = mailbox.password.encode()
    for key, values in redis_dump(app.config["REDIS_URL"]).items():
        for value in values:  # RQ's compressed job payloads come unpacked too
            assert secret not in value, key


def test_rq_worker_runs_the_sync_end_to_end(app, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        worker = make_worker(app, simple=True)
        assert worker.work(burst=True)
        job = Job.fetch(jobs.sync_job_id(inbox_id), connection=redis_connection())
        assert job.get_status() == "finished"
        assert job.return_value()["status"] == "ok" and job.return_value()["new_messages"] == 3
        # Finished: the same deterministic id can be enqueued again.
        assert jobs.enqueue_sync(inbox_id) == jobs.sync_job_id(inbox_id)
        assert worker.work(burst=True)
    assert get_inbox(app, inbox_id).status == "ok"
    assert len(stored(app, inbox_id)) == 3


def test_enqueue_is_refused_while_a_sync_runs_and_allowed_after(app, mailbox, owner):
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        queue().empty()
        lock = jobs.sync_lock(inbox_id)
        assert lock.acquire()
        try:
            assert jobs.sync_running(inbox_id)
            assert jobs.sync_inbox(inbox_id) == {"inbox_id": inbox_id, "status": "already_running"}
        finally:
            lock.release()
        assert not jobs.sync_running(inbox_id)
        assert jobs.enqueue_sync(inbox_id) is not None


LOCK_HOLDER = """
import sys, time
from redis import Redis
from plugins.imap_inbox.jobs import SyncLock
lock = SyncLock(Redis.from_url(sys.argv[1]), sys.argv[2], ttl=2)
assert lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_killed_worker_never_blocks_the_inbox_for_long(app, redis_url):
    """SIGKILL stops the heartbeat; the lock's TTL frees the inbox, while a live holder keeps it."""
    name = "imap_inbox:test:sync-lock:kill-test"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, redis_url, name], stdout=subprocess.PIPE,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        contender = jobs.SyncLock(Redis.from_url(redis_url), name, ttl=2)
        time.sleep(3)  # longer than the TTL: only the heartbeat keeps the lock
        assert not contender.acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 10
        while not contender.acquire():
            assert time.monotonic() < deadline, "the lock of a killed process never expired"
            time.sleep(0.2)
        contender.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def sync_losing_the_lock(app, inbox_id: int, lost_after: Callable[[int], bool]) -> dict:
    """Sync with a lock that is lost from the first progress report (one per commit) for which
    ``lost_after(messages done)`` holds; returns the sync's summary."""
    with app.app_context():
        lock = jobs.sync_lock(inbox_id)

        def on_progress(done, total):
            if lost_after(done):
                lock.lost = True

        original = jobs.sync_lock
        try:
            jobs.sync_lock = lambda _id: lock
            return jobs.sync_inbox(inbox_id, on_progress=on_progress)
        finally:
            jobs.sync_lock = original


def test_a_lost_lock_stops_the_sync_at_the_next_batch(crm_app_factory, mailbox):
    app = crm_app_factory(IMAP_FETCH_BATCH=2, IMAP_COMMIT_EVERY=2)  # a commit per batch (folder_sync.py "Commits")
    owner = make_owner(app)
    mailbox.write("INBOX", [message(n) for n in range(1, 7)])
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync_losing_the_lock(app, inbox_id, lambda done: done >= 2)
    assert summary["status"] == "failed" and "lock" in summary["error"]
    assert len(stored(app, inbox_id)) == 2  # the committed batch stays; the next run resumes


def test_a_lost_lock_rolls_back_the_uncommitted_group_and_counts_only_what_was_committed(crm_app_factory, mailbox):
    """Batches committed in groups (folder_sync.py "Commits"): a run stopped between two commits keeps the
    committed groups only, and its report (and the inbox's progress) counts exactly those."""
    app = crm_app_factory(IMAP_FETCH_BATCH=2, IMAP_COMMIT_EVERY=6)
    owner = make_owner(app)
    mailbox.write("INBOX", [message(n) for n in range(1, 41)])
    inbox_id = connect_inbox(app, mailbox, owner)
    committed = []

    def at_the_first_commit(done: int) -> bool:
        if done and not committed:
            committed.append(done)
        return bool(committed)

    summary = sync_losing_the_lock(app, inbox_id, at_the_first_commit)
    assert summary["status"] == "failed" and "lock" in summary["error"]
    assert committed and committed[0] in (2, 4, 6)
    assert len(stored(app, inbox_id)) == committed[0] == summary["new_messages"]
    with app.app_context():
        assert db.session.get(ImapInbox, inbox_id).progress_done == committed[0]


def test_schedule_due_syncs_enqueues_only_due_healthy_inboxes(app, mailbox, owner, dovecot):
    ids = {}
    for label in ("due", "later", "attention", "disabled", "never"):
        dovecot.add_user(f"{label}@team.example", f"pw-{label}-1")
        from tests.support.mailbox import Mailbox

        box = Mailbox(dovecot, f"{label}@team.example", f"pw-{label}-1")
        ids[label] = connect_inbox(app, box, owner, name=label)
    past = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    future = dt.datetime.now(UTC) + dt.timedelta(minutes=30)
    set_inbox(app, ids["due"], next_sync_at=past, status="ok")
    set_inbox(app, ids["later"], next_sync_at=future, status="ok")
    set_inbox(app, ids["attention"], next_sync_at=past, status="needs_attention")
    set_inbox(app, ids["disabled"], next_sync_at=past, enabled=False, status="disabled")
    set_inbox(app, ids["never"], next_sync_at=None, status="ok")
    with app.app_context():
        queue().empty()
        result = jobs.schedule_due_syncs()
        assert sorted(result["enqueued"]) == sorted([ids["due"], ids["never"]])
        assert sorted(queue().job_ids) == sorted(jobs.sync_job_id(i) for i in (ids["due"], ids["never"]))
        assert jobs.schedule_due_syncs()["enqueued"] == []  # not due any more, and queued anyway
    for label in ("due", "never"):
        next_at = get_inbox(app, ids[label]).next_sync_at.replace(tzinfo=UTC)
        assert next_at > dt.datetime.now(UTC) + dt.timedelta(minutes=29)


def test_recurring_job_is_declared_every_minute(app):
    from host_app.jobs import recurring_jobs

    found = [job for job in recurring_jobs(app) if job.func is jobs.schedule_due_syncs]
    assert len(found) == 1 and found[0].interval == 60


def test_sync_slots_are_spread_and_stable():
    now = dt.datetime(2025, 1, 1, 12, 0, 7, tzinfo=UTC)
    interval = 3600
    slots = {inbox_id: schedule.next_regular_sync(inbox_id, now, interval) for inbox_id in range(1, 201)}
    offsets = {int(at.timestamp()) % interval for at in slots.values()}
    assert len(offsets) > 190  # 200 inboxes do not start in the same second
    for inbox_id, at in slots.items():
        assert now + dt.timedelta(seconds=interval // 2) <= at <= now + dt.timedelta(seconds=interval * 3 // 2)
        # The next slot after that one is exactly one interval later: a fixed phase per inbox.
        assert schedule.next_regular_sync(inbox_id, at, interval) == at + dt.timedelta(seconds=interval)


def test_retry_backoff_doubles_up_to_the_interval():
    assert [schedule.retry_delay(n, 3600) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_sync_interval_setting(crm_app_factory):
    app = crm_app_factory(IMAP_SYNC_INTERVAL=900)
    with app.app_context():
        now = dt.datetime.now(UTC)
        at = schedule.next_regular_sync(7, now)
        assert dt.timedelta(seconds=450) <= at - now <= dt.timedelta(seconds=1350)


def test_successful_sync_schedules_the_next_slot(app, mailbox, owner):
    inbox_id = connect_inbox(app, mailbox, owner)
    before = dt.datetime.now(UTC)
    with app.app_context():
        assert jobs.sync_inbox(inbox_id)["status"] == "ok"
    inbox = get_inbox(app, inbox_id)
    next_at = inbox.next_sync_at.replace(tzinfo=UTC)
    assert before + dt.timedelta(minutes=29) < next_at < before + dt.timedelta(minutes=91)
    assert int(next_at.timestamp()) % 3600 == schedule.phase(inbox_id, 3600)
