"""The sync survives what production throws at it: killed workers, lost Redis, dropped database
connections, a mail server that is down, a mailbox whose UIDVALIDITY changes, and broken mail.

Everything is real: ``manage.py worker`` subprocesses killed with SIGKILL, a
redis-server of the test's own restarted without persistence, PostgreSQL
backends terminated mid-transaction, a Dovecot of the test's own stopped and
started. Every test ends with the exact rows a fault-free sync stores.
"""
from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from redis import Redis

from host_app.extensions import db
from host_app.jobs import make_worker
from host_app.models import Contact
from plugins.imap_inbox import jobs, service
from plugins.imap_inbox.jobs import schedule_due_syncs, sync_inbox
from plugins.imap_inbox.models import ImapInbox
from plugins.imap_inbox.schedule import utcnow
from plugins.imap_inbox.testing import mailgen
from plugins.imap_inbox.testing.dovecot import DovecotServer
from plugins.mail import models as mail_models
from plugins.mail.timeline import timeline_entries
from tests.support.faultproxy import FaultProxy
from tests.support.imap_helpers import connect_inbox, sync
from tests.support.mailbox import Mailbox
from tests.support.reliability_helpers import RedisServer, WorkerProcess, wait_for
from tests.support.sync_dump import canonical_dump, consistency_problems, diff_dumps, inbox_row, orphan_addresses

BIG_BATCH = 250
_accounts = itertools.count(1)


# --------------------------------------------------------------------------- fixtures and helpers


def new_account(server) -> Mailbox:
    n = next(_accounts)
    account = Mailbox(server, f"rel{n}-{uuid.uuid4().hex[:6]}@team.example", f"pw-rel-{n}-secret")
    server.add_user(account.username, account.password)
    return account


def connect(app, account, owner_id: int, **overrides) -> int:
    """Each account's inbox is named after it, so several inboxes in one test tell apart."""
    return connect_inbox(app, account, owner_id, **{"name": account.username, "email": account.username, **overrides})


def fill(account, n_inbox: int, n_sent: int, seed: int) -> dict[str, list[bytes]]:
    """Realistic mail written straight into the Maildirs; returns the raw messages by folder."""
    written: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    generated = mailgen.generate_mailbox(n_inbox, n_sent, owner=account.username, seed=seed)
    for folder, group in itertools.groupby(generated, key=lambda item: item[0]):
        messages = [raw for _, raw in group]
        account.write(folder, messages)
        written[folder].extend(messages)
    return written


_MESSAGE_ID_RE = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)


def message_ids(raw_messages: list[bytes]) -> Counter:
    return Counter(_MESSAGE_ID_RE.search(raw).group(1).decode() for raw in raw_messages)


def server_uids(account, folders=("INBOX", "Sent")) -> dict[str, list[int]]:
    with account.client() as imap:
        uids = {}
        for folder in folders:
            imap.select_folder(folder, readonly=True)
            uids[folder] = sorted(imap.search("ALL"))
        return uids


def stored_count(app, inbox_id: int) -> int:
    with app.app_context():
        try:
            return db.session.execute(
                sa.select(sa.func.count()).select_from(mail_models.Message)
                .where(mail_models.Message.inbox_id == inbox_id)
            ).scalar_one()
        finally:
            db.session.remove()


def assert_exactly(app, inbox_id: int, account, written: dict[str, list[bytes]]) -> None:
    """Every message on the server stored once, under its UID, and nothing else."""
    uids = server_uids(account)
    with app.app_context():
        dump = canonical_dump(inbox_id)
        for folder, raws in written.items():
            rows = dump.get(folder, [])
            assert [row[0] for row in rows] == uids[folder], f"{folder}: stored UIDs differ from the server's"
            assert Counter(row[1] for row in rows) == message_ids(raws), f"{folder}: lost or duplicated mail"
        assert orphan_addresses(inbox_id) == 0
        inbox = inbox_row(inbox_id)
        assert (inbox.status, inbox.error, inbox.failures) == (mail_models.OK, None, 0)
        assert inbox.message_count == sum(len(raws) for raws in written.values())


def lock_key(app, inbox_id: int) -> str:
    with app.app_context():
        return jobs._lock_name(inbox_id)


# --------------------------------------------------------------------------- 2. a worker killed mid-sync


def test_worker_killed_mid_sync_leaves_whole_batches_and_the_next_sync_resumes(make_app, owner, mailbox, tmp_path):
    app = make_app(IMAP_FETCH_BATCH=BIG_BATCH)
    written = fill(mailbox, 1600, 400, seed=21)
    total = sum(len(raws) for raws in written.values())
    inbox_id = connect(app, mailbox, owner)  # enqueues the first sync
    worker = WorkerProcess(app, tmp_path / "worker.log", IMAP_FETCH_BATCH=BIG_BATCH).start()
    try:
        wait_for(lambda: stored_count(app, inbox_id) > 0, 120, "the worker's first committed batch",
                 details=worker.log_tail)
        worker.kill()  # SIGKILL to the worker and its work horse, right after the first checkpoint
    finally:
        worker.stop()

    with app.app_context():
        problems = consistency_problems(inbox_id, server_uids(mailbox), batch=BIG_BATCH)
        assert not problems, problems
        before = stored_count(app, inbox_id)
        assert 0 < before < total, before
        assert inbox_row(inbox_id).status == mail_models.SYNCING  # nobody could say otherwise

    # The dead worker's lock still counts (a second sync now would race it), but it expires by itself.
    redis = Redis.from_url(app.config["REDIS_URL"])
    key = lock_key(app, inbox_id)
    ttl_ms = redis.pttl(key)
    assert 0 < ttl_ms <= jobs.LOCK_TTL * 1000, f"the sync lock of a dead worker must expire (PTTL {ttl_ms})"
    assert sync(app, inbox_id)["status"] == "already_running"
    assert stored_count(app, inbox_id) == before
    wait_for(lambda: not redis.exists(key), ttl_ms / 1000 + 10, "the dead worker's lock to expire", interval=0.25)

    summary = sync(app, inbox_id)
    assert summary["status"] == "ok", summary
    assert summary["new_messages"] == total - before, "the next sync must resume, not start over"
    assert_exactly(app, inbox_id, mailbox, written)
    # The inbox's health history must not show the killed run as still going.
    with app.app_context():
        run = mail_models.SyncRun
        runs = db.session.execute(sa.select(run.id, run.status, run.finished_at)
                                  .where(run.inbox_id == inbox_id).order_by(run.id)).all()
    assert [status for _, status, _ in runs] == ["failed", "ok"] and all(end for _, _, end in runs), (
        f"the run of the killed worker is never closed: {runs}")


# --------------------------------------------------------------------------- 3. Redis restarted


@pytest.fixture
def own_redis():
    server = RedisServer().start()
    yield server
    server.close()


def test_redis_restart_loses_the_queue_and_the_scheduler_enqueues_every_waiting_inbox_again(
        make_app, owner, dovecot, own_redis):
    """Redis without persistence restarts: queued jobs are gone. ``next_sync_at`` and the status are in the
    database, so the next scheduler tick plus a worker catch up: every inbox that was waiting gets synced."""
    app = make_app(REDIS_URL=own_redis.url())
    created_queued, enqueued_by_scheduler, created_while_down = (new_account(dovecot) for _ in range(3))
    written = {account.username: fill(account, 25, 5, seed=n)
               for n, account in enumerate((created_queued, enqueued_by_scheduler, created_while_down))}

    # An inbox synced before, with new mail since, that the scheduler found due and enqueued.
    scheduled = connect(app, enqueued_by_scheduler, owner)
    with app.app_context():
        make_worker(app, simple=True).work(burst=True)  # its first sync, the job create_inbox enqueued
        assert inbox_row(scheduled).status == mail_models.OK
    more = fill(enqueued_by_scheduler, 7, 2, seed=99)
    for folder, raws in more.items():
        written[enqueued_by_scheduler.username][folder].extend(raws)
    with app.app_context():
        db.session.execute(sa.update(ImapInbox).where(ImapInbox.id == scheduled)
                           .values(next_sync_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    queued = connect(app, created_queued, owner)  # create_inbox enqueues its first sync
    with app.app_context():
        assert scheduled in schedule_due_syncs()["enqueued"]
        assert jobs.queue().count == 2

    own_redis.kill()
    while_down = connect(app, created_while_down, owner)  # the enqueue fails quietly; the inbox is saved
    own_redis.start()  # empty: both queued jobs are lost

    with app.app_context():
        assert jobs.queue().count == 0
        schedule_due_syncs()  # the scheduler's next tick
        make_worker(app, simple=True).work(burst=True)
        waiting = {}
        for inbox_id, account in ((queued, created_queued), (scheduled, enqueued_by_scheduler),
                                  (while_down, created_while_down)):
            inbox = inbox_row(inbox_id)
            waiting[account.username] = (inbox.status, inbox.message_count)
    expected = {name: (mail_models.OK, sum(len(r) for r in raws.values())) for name, raws in written.items()}
    assert waiting == expected, (
        "after Redis lost its queue, a scheduler tick and a worker burst must sync every inbox that was "
        f"waiting; got (status, messages) {waiting}, expected {expected}")
    for inbox_id, account in ((queued, created_queued), (scheduled, enqueued_by_scheduler),
                              (while_down, created_while_down)):
        assert_exactly(app, inbox_id, account, written[account.username])


def test_redis_gone_while_a_worker_syncs_stops_it_cleanly_and_the_retry_completes(
        make_app, owner, mailbox, own_redis, tmp_path):
    """Redis dies under a running sync and comes back empty, without the sync's lock. The sync must notice
    (another worker could now take the inbox), stop at a batch boundary with a plain reason and a retry, and
    leave nothing half-written; the scheduler's retry then completes it exactly."""
    app = make_app(REDIS_URL=own_redis.url(), IMAP_FETCH_BATCH=100)
    written = fill(mailbox, 1200, 300, seed=33)
    # A slow link keeps the sync going well past the lock's next renewal (every LOCK_TTL / 4 seconds).
    rate = 2_000_000 / (jobs.LOCK_TTL / 4 * 2)
    with FaultProxy(mailbox.host, mailbox.port, down_rate=rate) as slow_link:
        inbox_id = connect(app, mailbox, owner, port=slow_link.port)
        worker = WorkerProcess(app, tmp_path / "worker.log", IMAP_FETCH_BATCH=100).start()
        try:
            wait_for(lambda: stored_count(app, inbox_id) > 0, 120, "the worker's first committed batch",
                     details=worker.log_tail)
            own_redis.restart()

            def run_ended() -> bool:
                with app.app_context():
                    try:
                        return db.session.scalar(sa.select(sa.func.count()).select_from(mail_models.SyncRun).where(
                            mail_models.SyncRun.inbox_id == inbox_id, mail_models.SyncRun.status == "running")) == 0
                    finally:
                        db.session.remove()

            wait_for(run_ended, 180, "the sync run to end after Redis went away", interval=0.25,
                     details=worker.log_tail)
        finally:
            worker.stop()

    with app.app_context():
        inbox = inbox_row(inbox_id)
        stored = stored_count(app, inbox_id)
        problems = consistency_problems(inbox_id, server_uids(mailbox), batch=100)
        assert not problems, problems
        assert (inbox.status, inbox.failures) == (mail_models.ERROR, 1), (
            f"the sync went on without its lock: {inbox.status}, {stored} of 1500 stored\n{worker.log_tail()}")
        assert 0 < stored < 1500
        assert "lock" in inbox.error and "Traceback" not in inbox.error, inbox.error
        assert inbox.next_sync_at is not None
        # The backoff has passed (a minute): the scheduler's next tick finds the inbox due again.
        db.session.execute(sa.update(ImapInbox).where(ImapInbox.id == inbox_id)
                           .values(next_sync_at=utcnow(), port=mailbox.port))
        db.session.commit()
        assert inbox_id in schedule_due_syncs()["enqueued"]
        make_worker(app, simple=True).work(burst=True)
    assert_exactly(app, inbox_id, mailbox, written)


def test_two_installations_sharing_a_redis_database_keep_their_sync_jobs_apart(make_app, owner, mailbox):
    """Sync locks are namespaced by RQ_QUEUE, so one Redis may serve several installations (or a staging and
    a production one); their sync jobs must be kept apart too: inbox #1 of one is not inbox #1 of the other."""
    first, second = make_app(RQ_QUEUE="crm-one"), make_app(RQ_QUEUE="crm-two")
    inbox_id = connect(first, mailbox, owner)  # enqueues on crm-one
    with first.app_context():
        assert jobs.queue().count == 1
    with second.app_context():
        enqueued = jobs.enqueue_sync(inbox_id)
        second_count = jobs.queue().count
        service.cancel_queued_sync(inbox_id)  # e.g. the second installation deletes its inbox #1
    with first.app_context():
        first_count = jobs.queue().count
    assert (enqueued is not None, second_count, first_count) == (True, 1, 1), (
        f"installation two could {'not ' if enqueued is None else ''}enqueue its inbox #{inbox_id} "
        f"({second_count} job on its queue), and cancelling it left {first_count} job on installation one's "
        "queue: RQ job ids (imap_inbox-sync-<id>) are global in a Redis database, unlike the sync locks")


# --------------------------------------------------------------------------- 4. the database connection dropped


@pytest.mark.postgresql_only  # COPY is the PostgreSQL insert path
def test_postgres_copy_errors_surface_as_sqlalchemy_errors_and_the_session_recovers(app):
    """COPY goes past SQLAlchemy: its driver errors must still look like SQLAlchemy's, or the sync mislabels them."""
    from plugins.mail import store

    broken_row = dict.fromkeys(store.MESSAGE_COLUMNS)  # NOT NULL columns left empty
    with app.app_context():
        with pytest.raises(sa.exc.IntegrityError):
            store.insert_messages([broken_row | {"folder_id": 1, "uid": 1}], [[]])
        db.session.rollback()
        pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        monitor = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
        with monitor.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monitor.dispose()
        with pytest.raises(sa.exc.OperationalError):
            store.insert_messages([broken_row | {"folder_id": 1, "uid": 1}], [[]])
        db.session.rollback()
        assert db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid  # a new connection


@pytest.mark.postgresql_only  # SQLite is a file in the worker's own process: no server connection to drop
def test_postgres_connection_terminated_mid_transaction(make_app, owner, mailbox, dovecot):
    batch = 100
    app = make_app(IMAP_FETCH_BATCH=batch, SQLALCHEMY_ENGINE_OPTIONS={
        "pool_pre_ping": True, "connect_args": {"application_name": "imap-sync-under-test"}})
    written = fill(mailbox, 500, 100, seed=44)
    inbox_id = connect(app, mailbox, owner)
    monitor = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
    terminated: list[tuple] = []

    def terminate_next_open_transaction() -> None:
        # The sync's next batch opens its transaction, then waits for the FETCH answer: kill it there.
        with monitor.connect() as conn:
            for _ in range(2000):
                row = conn.execute(sa.text(
                    "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = 'imap-sync-under-test'"
                    " AND state LIKE 'idle in transaction%' AND datname = current_database()")).first()
                if row is not None:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": row.pid})
                    terminated.append(tuple(row))
                    return
                threading.Event().wait(0.002)

    killer: list[threading.Thread] = []

    def after_batch(done: int, total: int) -> None:
        if done >= 2 * batch and not killer:  # two batches are in; break the third one
            killer.append(threading.Thread(target=terminate_next_open_transaction, daemon=True))
            killer[0].start()

    with app.app_context():
        try:
            summary = sync_inbox(inbox_id, on_progress=after_batch)
        except sa.exc.OperationalError as exc:
            summary = {"status": "raised", "error": str(exc)}
        db.session.remove()
    killer[0].join(timeout=10)
    monitor.dispose()
    assert terminated, "the sync's connection was never seen inside a transaction"
    assert summary["status"] in ("failed", "raised"), summary

    with app.app_context():
        inbox = inbox_row(inbox_id)
        stored = stored_count(app, inbox_id)
        assert stored % batch == 0 and stored >= 2 * batch, f"{stored} stored: a half-written batch"
        assert not consistency_problems(inbox_id, server_uids(mailbox), batch=batch)
        assert inbox.status == mail_models.ERROR and inbox.failures == 1, (inbox.status, inbox.failures)
        assert inbox.next_sync_at is not None and inbox.error
        reported = (inbox.error, inbox.error_hint or "")
        assert mailbox.password not in inbox.error + (inbox.error_hint or "")
        run = db.session.scalars(sa.select(mail_models.SyncRun).where(mail_models.SyncRun.inbox_id == inbox_id)
                                 .order_by(mail_models.SyncRun.id.desc())).first()
        assert run.status == "failed" and run.finished_at is not None

    summary = sync(app, inbox_id)
    assert summary["status"] == "ok" and summary["new_messages"] == 600 - stored, summary
    assert_exactly(app, inbox_id, mailbox, written)
    reference = connect(app, mailbox, owner, host="localhost")
    assert sync(app, reference)["status"] == "ok"
    with app.app_context():
        got, want = canonical_dump(inbox_id), canonical_dump(reference)
        assert got == want, diff_dumps(got, want)
    # Plain words: the database went away. That is no bug, and the admin needs to know which part failed.
    assert "database" in reported[0].lower() and "bug" not in reported[1].lower(), (
        f"a dropped database connection is reported as {reported}")


# --------------------------------------------------------------------------- 5. the IMAP server down for a while


def test_imap_server_down_backs_off_with_a_plain_reason_then_catches_up(make_app, owner):
    app = make_app()
    with DovecotServer() as server:
        account = new_account(server)
        written = fill(account, 40, 10, seed=55)
        inbox_id = connect(app, account, owner)
        assert sync(app, inbox_id)["status"] == "ok"
        later = fill(account, 12, 3, seed=56)
        server.stop()

        delays = []
        for attempt in (1, 2, 3):
            before = utcnow()
            summary = sync(app, inbox_id)
            assert summary["status"] == "failed" and summary["error_kind"] == "connection_refused", summary
            with app.app_context():
                inbox = inbox_row(inbox_id)
                status = service.inbox_status(inbox)
                assert (inbox.status, inbox.failures) == (mail_models.ERROR, attempt)
                delays.append((inbox.next_sync_at.replace(tzinfo=None) - before.replace(tzinfo=None)).total_seconds())
                assert status["status"] == "error" and status["next_sync_at"]
                assert "No IMAP server answered" in status["error"] and "retries automatically" in status["error_hint"]
                assert account.password not in repr(status)
                # Not due yet: the scheduler leaves it alone until the backoff has passed.
                assert inbox_id not in schedule_due_syncs()["enqueued"]
        assert 50 <= delays[0] < delays[1] < delays[2], f"no exponential backoff: {delays}"
        with app.app_context():
            assert inbox_row(inbox_id).message_count == 50  # what was stored stays

        server.start()
        summary = sync(app, inbox_id)
        assert summary["status"] == "ok" and summary["new_messages"] == 15, summary
        for folder, raws in later.items():
            written[folder].extend(raws)
        assert_exactly(app, inbox_id, account, written)


# --------------------------------------------------------------------------- 6. UIDVALIDITY reset


def test_uidvalidity_reset_rematches_by_message_id_without_duplicates_or_losses(make_app, owner, mailbox):
    app = make_app(IMAP_FETCH_BATCH=7)
    customer = "carla@customer.example"
    sent = [mailgen.make_message(("Team", mailbox.username), ("Carla", customer), f"Offer {n}",
                                 message_id=f"<offer{n}@team.example>", body=f"offer number {n}\n")
            for n in range(12)]
    # Broken mailers reuse Message-IDs: two different e-mails, one ID; and one without any ID.
    sent.append(mailgen.make_message(("Team", mailbox.username), ("Carla", customer), "Reused id: first",
                                     message_id="<reused@team.example>", body="first\n"))
    sent.append(mailgen.make_message(("Team", mailbox.username), ("Carla", customer), "Reused id: second",
                                     message_id="<reused@team.example>", body="the second, longer one\n"))
    without_id = mailgen.make_message(("Team", mailbox.username), ("Carla", customer), "No id", message_id="x")
    sent.append(without_id.replace(b"Message-ID: x\r\n", b""))
    mailbox.write("Sent", sent)
    mailbox.write("INBOX", [mailgen.make_message(("Carla", customer), mailbox.username, f"Question {n}",
                                                 message_id=f"<q{n}@customer.example>") for n in range(5)])
    inbox_id = connect(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    with app.app_context():
        ids_before = dict(db.session.execute(
            sa.select(mail_models.Message.dedup_key, sa.func.min(mail_models.Message.id)).where(
                mail_models.Message.inbox_id == inbox_id).group_by(mail_models.Message.dedup_key)).all())
        contact = Contact(email=customer, name="Carla")
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id

    mailbox.server.recreate_folder(mailbox.username, "Sent")
    mailbox.write("Sent", sent[::-1])  # the same messages back, in another order (as a re-import may)
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok", summary
    assert summary["folders"]["Sent"]["uidvalidity_changed"]
    assert summary["new_messages"] == 0, "messages already stored must be re-matched, not stored again"

    uids = server_uids(mailbox)
    with app.app_context():
        dump = canonical_dump(inbox_id)
        assert [row[0] for row in dump["Sent"]] == uids["Sent"]
        assert len(dump["Sent"]) == len(sent) and len(dump["INBOX"]) == 5
        ids_after = dict(db.session.execute(
            sa.select(mail_models.Message.dedup_key, sa.func.min(mail_models.Message.id)).where(
                mail_models.Message.inbox_id == inbox_id).group_by(mail_models.Message.dedup_key)).all())
        assert ids_after == ids_before, "re-matched rows keep their ids (other plugins point at them)"
        entries = timeline_entries(db.session.get(Contact, contact_id), None, 100)
        keys = Counter(entry.key for entry in entries)
        assert max(keys.values()) == 1, "an e-mail shown twice on the timeline"
        assert len(entries) == 12 + 1 + 1 + 5  # 12 offers, the reused ID once, the one without an ID, 5 questions

    # Each UID must carry its own message's data, as a sync from scratch stores it.
    reference = connect(app, mailbox, owner, host="localhost")
    assert sync(app, reference)["status"] == "ok"
    with app.app_context():
        got, want = canonical_dump(inbox_id), canonical_dump(reference)
        assert got == want, ("after the UIDVALIDITY change some UIDs carry another message's data "
                             "(re-matched by Message-ID alone):\n" + diff_dumps(got, want))


# --------------------------------------------------------------------------- 7. the malformed corpus


# What the sync must say about each broken message, by name: a word its parse_error contains, or None
# when the message is stored cleanly (its defect is in the body, or in headers the sync does not read, or
# it is merely unusual). Every one must be stored: a broken e-mail never stops a sync or disappears.
FLAGGED = {
    "empty_message": "no headers",
    "only_whitespace": "no headers",
    "body_only_no_headers": "no headers",
    "unknown_charset_encoded_word": "unknown charset",
    "invalid_base64_encoded_word": "undecodable encoded word",
    "encoded_word_invalid_utf8_bytes": "not valid utf-8",
    "encoded_word_mislabelled_charset": "not valid us-ascii",
    "invalid_date_text": "Date:",
    "invalid_date_month_13": "Date:",
    "date_year_10000": "Date:",
    "date_epoch_zero": "Date:",
    "from_without_angle_brackets": "From:",
    "from_unbalanced_quote": "From:",
    "from_multiple_at_signs": "From:",
    "from_no_domain": "From:",
}
# Values the sync must still get right despite the defect.
EXPECTED_VALUES = {
    "raw_8bit_utf8_subject": {"subject": "Grüße aus Köln – 東京"},
    "raw_8bit_latin1_display_name": {"from_email": "j@example.de", "from_name": "Jürgen Müller"},
    "unknown_charset_encoded_word": {"subject": "café"},
    "encoded_word_mislabelled_charset": {"subject": "café"},
    "from_without_angle_brackets": {"from_email": "john@example.com"},
    "from_unbalanced_quote": {"from_email": "john@example.com"},
    "from_multiple_at_signs": {"from_email": None},
    "from_no_domain": {"from_email": None},
    "from_multiple_mailboxes": {"from_email": "a@example.com"},
    "address_with_comments": {"from_email": "john@example.com"},
    "date_two_digit_year_no_tz": {"date": "1999-03-03T10:00:00+00:00"},
    "date_iso8601_format": {"date": "2024-05-06T07:08:09+00:00"},
    "message_id_without_brackets": {"message_id": "plainid@example.com"},
    "message_id_with_spaces_and_duplicates": {"message_id": "spacedid@example.com"},
    "tab_and_control_chars_in_headers": {"subject": "tabbed subject"},
    "lf_only_line_endings": {"from_email": "sender@example.com", "subject": "Test"},
    "cr_only_line_endings": {"from_email": "sender@example.com", "subject": "Test"},
}


def test_malformed_corpus_syncs_without_a_crash_and_each_message_is_stored_or_flagged(make_app, owner, mailbox):
    corpus = mailgen.malformed_corpus()
    assert len(corpus) >= 40
    assert set(FLAGGED) | set(EXPECTED_VALUES) <= {name for name, _ in corpus}
    app = make_app(IMAP_FETCH_BATCH=10)
    mailbox.write("INBOX", [raw for _, raw in corpus])  # Maildir order = UID order
    inbox_id = connect(app, mailbox, owner)
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok", summary
    assert summary["new_messages"] == len(corpus)
    uids = server_uids(mailbox)["INBOX"]
    assert len(uids) == len(corpus)
    problems = []
    with app.app_context():
        rows = {m.uid: m for m in db.session.scalars(
            sa.select(mail_models.Message).where(mail_models.Message.inbox_id == inbox_id))}
        for (name, _), uid in zip(corpus, uids, strict=True):
            message = rows.get(uid)
            if message is None:
                problems.append(f"{name}: not stored")
                continue
            error = message.parse_error
            if error is not None and (not error.strip() or len(error) > 1000 or "Traceback" in error):
                problems.append(f"{name}: the reason is not a short plain text: {error[:80]!r}")
            wanted = FLAGGED.get(name)
            if wanted is None and error is not None:
                problems.append(f"{name}: flagged although nothing is wrong with what the sync reads: {error!r}")
            elif wanted is not None and (error is None or wanted not in error):
                problems.append(f"{name}: expected a parse_error about {wanted!r}, got {error!r}")
            for field, value in EXPECTED_VALUES.get(name, {}).items():
                got = getattr(message, field)
                if field == "date":
                    got = got.replace(tzinfo=None).isoformat() + "+00:00"
                if got != value:
                    problems.append(f"{name}: {field} is {got!r}, expected {value!r}")
        # Nothing silently cut: a message with 2000 recipients keeps them all, or says it did not.
        many = rows[uids[[name for name, _ in corpus].index("two_thousand_recipients")]]
        recipients = sum(1 for a in many.addresses if a.role == "to")
        if recipients != 2000 and "address" not in (many.parse_error or ""):
            problems.append(f"two_thousand_recipients: {recipients} of 2000 recipients stored, "
                            f"and parse_error says nothing about it ({many.parse_error!r})")
    assert not problems, "\n".join(problems)
