"""The readers' heavy work after a sync runs on RQ jobs of its own, after the sync, in order, and only once.

Real Dovecot, the real sync job, real RQ workers (``host_app.testing.run_jobs``): the sync's
``mailbox_synced`` hook only enqueues contacts_import's import and reply_condition's matching
(``plugins.mail.followups``); the matching of a run waits for the import of the same run.
"""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from rq.job import Job, JobStatus

from host_app import hookimpl
from host_app.extensions import db
from host_app.jobs import queue, redis_connection
from host_app.models import AutomationRule, Contact
from host_app.testing import run_jobs
from plugins.contacts_import.jobs import import_after_sync
from plugins.contacts_import.models import ImportState
from plugins.imap_inbox.testing.mailgen import make_message
from plugins.mail.followups import follow_up_job_id
from plugins.mail.models import Inbox, Message, SyncRun
from plugins.reply_condition.jobs import match_after_sync
from plugins.reply_condition.models import Response
from tests.support.imap_helpers import connect_inbox, sync

NOW = datetime.now(UTC).replace(microsecond=0)
ZOE = "zoe@client.example"


def offer_and_reply(mailbox, n: int, sender: str = ZOE) -> None:
    """Our e-mail to ``sender`` in Sent and their reply to it in INBOX."""
    offer = f"offer{n}@team.example"
    mailbox.server.append(mailbox.username, "Sent", make_message(
        ("Team", mailbox.username), sender, f"Offer {n}", date=NOW - timedelta(days=1), message_id=f"<{offer}>"))
    mailbox.server.append(mailbox.username, "INBOX", make_message(
        ("Client", sender), mailbox.username, f"Re: Offer {n}", date=NOW, message_id=f"<reply{n}@client.example>",
        in_reply_to=f"<{offer}>"))


def connect(app, mailbox, owner) -> int:
    inbox_id = connect_inbox(app, mailbox, owner, settings={"create_users": True})
    with app.app_context():
        queue(app).empty()  # the first sync create_inbox enqueued: the tests run the syncs themselves
        db.session.add(AutomationRule(name="Tag responders", trigger="contact_replied",
                                      actions=[{"key": "add_tag", "params": {"tag": "replied"}}]))
        db.session.commit()
    return inbox_id


def last_run_id(app, inbox_id: int) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.max(SyncRun.id)).where(SyncRun.inbox_id == inbox_id))


def follow_up_jobs(app, run_id: int) -> tuple[Job, Job]:
    """The run's import job and matching job, as RQ holds them."""
    with app.app_context():
        conn = redis_connection()
        return (Job.fetch(follow_up_job_id(import_after_sync, run_id), connection=conn),
                Job.fetch(follow_up_job_id(match_after_sync, run_id), connection=conn))


def state(app, inbox_id: int) -> dict:
    with app.app_context():
        return {
            "contacts": {c.email: c.tags for c in db.session.scalars(sa.select(Contact))},
            "responses": db.session.scalar(sa.select(sa.func.count()).select_from(Response)),
            "runs": [r.status for r in db.session.scalars(sa.select(SyncRun).where(SyncRun.inbox_id == inbox_id))],
            "inbox": db.session.get(Inbox, inbox_id).status,
            "import": getattr(db.session.get(ImportState, inbox_id), "status", None),
        }


def test_the_sync_only_enqueues_the_follow_ups_which_then_run_in_order(app, mailbox, owner):
    offer_and_reply(mailbox, 1)
    inbox_id = connect(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    run_id = last_run_id(app, inbox_id)
    # The sync ended with its mail stored and nothing imported or matched inside it (the import record that
    # holds Create users is still idle).
    assert state(app, inbox_id) == {"contacts": {}, "responses": 0, "runs": ["ok"], "inbox": "ok", "import": "idle"}
    importing, matching = follow_up_jobs(app, run_id)
    with app.app_context():
        newest = db.session.scalar(sa.select(sa.func.max(Message.id)))
    # Ids, never secrets; the matching's bound is what the run had stored.
    assert (importing.args, matching.args) == ((inbox_id, run_id), (inbox_id, run_id, newest))
    assert importing.get_status() == JobStatus.QUEUED
    assert matching.get_status() == JobStatus.DEFERRED and matching.dependency_ids == [importing.id]

    assert run_jobs(app)
    # What the sync did inline before: the contact exists and the reply's automation tagged it.
    assert state(app, inbox_id) == {"contacts": {ZOE: ["replied"]}, "responses": 1, "runs": ["ok"], "inbox": "ok",
                                    "import": "done"}
    importing, matching = follow_up_jobs(app, run_id)
    assert importing.get_status() == matching.get_status() == JobStatus.FINISHED
    assert matching.started_at >= importing.ended_at
    assert matching.return_value() == {"inbox_id": inbox_id, "run_id": run_id, "responses": 1, "announced": 1}


def test_a_failing_follow_up_fails_alone_and_leaves_the_sync_run_ok(app, mailbox, owner, caplog):
    offer_and_reply(mailbox, 1)
    inbox_id = connect(app, mailbox, owner)

    class BrokenListener:
        @hookimpl
        def contact_created(self, contacts):
            raise RuntimeError("a listener of contact_created broke")

    app.extensions["plugins"].pm.register(BrokenListener(), name="broken")
    caplog.set_level(logging.INFO)
    assert sync(app, inbox_id)["status"] == "ok"
    run_id = last_run_id(app, inbox_id)
    assert run_jobs(app)
    importing, matching = follow_up_jobs(app, run_id)
    assert importing.get_status() == JobStatus.FAILED
    # The matching waited for the import, not for its success.
    assert matching.get_status() == JobStatus.FINISHED
    found = state(app, inbox_id)
    assert (found["runs"], found["inbox"], found["import"], found["responses"]) == (["ok"], "ok", "failed", 1)
    assert f"contacts import of inbox {inbox_id} after sync run {run_id} failed: RuntimeError" in caplog.text
    assert mailbox.password not in caplog.text


def test_a_sync_with_nothing_new_enqueues_nothing(app, mailbox, owner):
    offer_and_reply(mailbox, 1)
    inbox_id = connect(app, mailbox, owner)
    sync(app, inbox_id)
    assert run_jobs(app)
    sync(app, inbox_id)
    with app.app_context():
        assert queue(app).count == 0 and queue(app).deferred_job_registry.count == 0


@pytest.mark.parametrize("order", ["first-run-late", "side-by-side"])
def test_two_quick_syncs_create_and_announce_everything_once_with_its_contact(app, mailbox, owner, order):
    """Two syncs, then their follow-ups: the first run's after the second sync stored its mail (a busy queue),
    or both runs' at the same time, as two workers take them."""
    offer_and_reply(mailbox, 1)
    inbox_id = connect(app, mailbox, owner)
    sync(app, inbox_id)
    first = follow_up_jobs(app, last_run_id(app, inbox_id))
    offer_and_reply(mailbox, 2)
    offer_and_reply(mailbox, 3, sender="ann@client.example")  # Ann becomes a contact with the second run
    sync(app, inbox_id)
    second = follow_up_jobs(app, last_run_id(app, inbox_id))
    announced, created = [], []
    # Keys are per thread (one per e-mail of ours answered): CRM_REPLY_CONDITION_EVENT_ONCE_PER defaults to thread.

    class Spy:
        @hookimpl
        def event_emitted(self, event):
            if event.type == "contact_replied":
                announced.append((event.key, event.contact_ids))

        @hookimpl
        def contact_created(self, contacts):
            created.extend(c.email for c in contacts)

    app.extensions["plugins"].pm.register(Spy(), name="spy")
    if order == "first-run-late":
        # The first run's jobs only now: its matching must leave the second run's mail to that run's jobs.
        with app.app_context():
            for job in first:
                job.func(*job.args)
        assert [key for key, _ in announced] == ["thread:offer1@team.example"]
    else:
        # Each run's jobs on a thread of its own; the imports start together, then the matchings do.
        barrier = threading.Barrier(2)
        errors = []

        def worker(jobs: tuple[Job, Job]) -> None:
            try:
                with app.app_context():
                    for job in jobs:
                        barrier.wait(timeout=30)
                        job.func(*job.args)
            except Exception as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(jobs,)) for jobs in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
    assert run_jobs(app)  # the queued jobs themselves, which find their work done or do the rest

    with app.app_context():
        ids = {c.email: c.id for c in db.session.scalars(sa.select(Contact))}
    assert sorted(created) == sorted(ids) == ["ann@client.example", ZOE]
    assert sorted(announced) == [("thread:offer1@team.example", (ids[ZOE],)),
                                 ("thread:offer2@team.example", (ids[ZOE],)),
                                 ("thread:offer3@team.example", (ids["ann@client.example"],))]
    assert state(app, inbox_id)["responses"] == 3
