"""Live inboxes: ``manage.py watch`` processes on a real Dovecot, real Redis and a real RQ worker.

Each test connects inboxes and syncs them once, then starts a worker and one or two watchers as
subprocesses and only touches the mailbox: whatever reaches the database got there through IDLE,
the usual sync job and its lock.
"""
from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from redis import Redis

from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact
from plugins.imap_inbox.watcher.leases import Leases
from plugins.mail.models import SyncRun
from tests.imap_inbox.test_imap_oauth import connect_oauth, dovecot_logins, oauth_config
from tests.support.imap_helpers import connect_inbox, message, stored, sync
from tests.support.mailbox import Mailbox
from tests.support.reliability_helpers import WorkerProcess, wait_for
from tests.support.watcher_helpers import WatcherProcess, wait_until_live, watch_statuses

ENCRYPTION_KEY = Fernet.generate_key().decode()
CARLA = "carla@customer.example"
_numbers = itertools.count(1000)
FAST = dict(IMAP_WATCH_HEARTBEAT="1", IMAP_WATCH_RETRY_FIRST="1")


@pytest.fixture
def live_app(crm_app_factory):
    return crm_app_factory(IMAP_ENCRYPTION_KEYS=ENCRYPTION_KEY, RQ_QUEUE=f"watch-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def processes(live_app, tmp_path):
    """Start workers and watchers with ``start(kind, **settings)``; all are stopped at the end."""
    started: list[WorkerProcess] = []
    names = itertools.count(1)

    def start(kind: str = "watcher", **settings):
        cls = WatcherProcess if kind == "watcher" else WorkerProcess
        process = cls(live_app, tmp_path / f"{kind}-{next(names)}.log", **{**FAST, **settings}).start()
        started.append(process)
        return process

    start.started = started
    yield start
    for process in started:
        process.stop()


def logs(processes) -> str:
    return "\n".join(p.log_tail() for p in processes.started)


def new_account(dovecot) -> Mailbox:
    n = next(_numbers)
    username, password = f"live{n}@team.example", f"pw-live-{n}-secret"
    dovecot.add_user(username, password)
    return Mailbox(dovecot, username, password)


def connected(app, owner, account: Mailbox) -> int:
    inbox_id = connect_inbox(app, account, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    return inbox_id


def add_carla(app) -> int:
    with app.app_context():
        contact = Contact(email=CARLA, name="Carla")
        db.session.add(contact)
        db.session.commit()
        return contact.id


def subjects(app, inbox_id: int, folder: str = "INBOX") -> set[str]:
    return {row["subject"] for row in stored(app, inbox_id, folder)}


def sync_runs(app, inbox_id: int) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(SyncRun).where(SyncRun.inbox_id == inbox_id))


def no_sync_waiting(app) -> bool:
    """No sync job queued or running (the first one create_inbox enqueued included)."""
    from rq import Queue

    from host_app.jobs import redis_connection

    with app.app_context():
        queue = Queue(app.config["RQ_QUEUE"], connection=redis_connection())
        return queue.count == 0 and queue.started_job_registry.count == 0


def test_new_mail_is_on_the_timeline_within_seconds_and_a_burst_is_one_or_two_syncs(
        live_app, owner, mailbox, processes, runner):
    app = live_app
    add_carla(app)
    inbox_id = connected(app, owner, mailbox)
    processes("worker")
    processes("watcher")
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    wait_for(lambda: no_sync_waiting(app), 30, "the sync create_inbox enqueued to end")
    runs_before = sync_runs(app, inbox_id)

    delivered = time.monotonic()
    mailbox.append("INBOX", message(1, subject="Pushed to us"))

    def on_timeline() -> bool:
        result = runner.invoke(args=["contacts", "timeline", CARLA, "--json"])
        return "Pushed to us" in result.output

    wait_for(on_timeline, 20, "the pushed e-mail on Carla's timeline", interval=0.1, details=lambda: logs(processes))
    assert sync_runs(app, inbox_id) > runs_before
    assert time.monotonic() - delivered < 10  # within seconds, not at the hourly sync
    # The inbox list hears of the event within a second (statuses are written to Redis once a second).
    wait_for(lambda: watch_statuses(app, [inbox_id])[inbox_id].get("last_event") is not None, 5,
             "the list to show the time of the last change")
    assert watch_statuses(app, [inbox_id])[inbox_id]["mode"] == "live"

    wait_for(lambda: no_sync_waiting(app), 30, "the syncs so far to end")
    burst_start = sync_runs(app, inbox_id)
    with mailbox.client() as imap:  # a burst as a mail server delivers it: one after the other
        for n in range(2, 52):
            imap.append("INBOX", message(n, subject=f"Burst {n}"))
    wanted = {f"Burst {n}" for n in range(2, 52)}
    wait_for(lambda: wanted <= subjects(app, inbox_id), 60, "all 50 messages of the burst",
             details=lambda: logs(processes))
    time.sleep(3)  # a sync the burst caused late would show now
    assert 1 <= sync_runs(app, inbox_id) - burst_start <= 2


def test_an_expunge_is_picked_up(live_app, owner, mailbox, processes):
    app = live_app
    for n in (1, 2):
        mailbox.append("INBOX", message(n, subject=f"Keep {n}" if n == 1 else "Goes away"))
    inbox_id = connected(app, owner, mailbox)
    assert subjects(app, inbox_id) == {"Keep 1", "Goes away"}
    processes("worker")
    processes("watcher")
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    with mailbox.client() as imap:
        imap.select_folder("INBOX", readonly=True)
        uid = imap.search(["SUBJECT", "Goes away"])[0]
    mailbox.server.expunge(mailbox.username, "INBOX", [uid])
    wait_for(lambda: subjects(app, inbox_id) == {"Keep 1"}, 20, "the expunged message to leave the database",
             details=lambda: logs(processes))


def test_a_wrong_password_needs_attention_once_and_the_server_is_not_hammered(
        live_app, owner, mailbox, processes, dovecot):
    app = live_app
    inbox_id = connected(app, owner, mailbox)
    dovecot.add_user(mailbox.username, "changed-by-the-user-1")  # the stored password no longer works
    log_start = dovecot.log_path.stat().st_size
    watcher = processes("watcher")

    def needs_attention() -> bool:
        with app.app_context():
            from plugins.mail.models import Inbox

            inbox = db.session.get(Inbox, inbox_id)
            db.session.expire_all()
            return inbox.status == "needs_attention"

    wait_for(needs_attention, 20, "the inbox to need attention", details=lambda: logs(processes))
    time.sleep(5)  # five more heartbeats: a hot loop would log in again and again
    with dovecot.log_path.open("rb") as log:
        log.seek(log_start)
        failures = [line for line in log.read().splitlines()
                    if mailbox.username.encode() in line and b"password mismatch" in line.lower()]
    assert len(failures) == 1, failures
    with app.app_context():
        from plugins.mail.models import Inbox

        inbox = db.session.get(Inbox, inbox_id)
        assert "rejected the user name or password" in inbox.error
    assert "changed-by-the-user-1" not in watcher.log_path.read_text()
    assert mailbox.password not in watcher.log_path.read_text()


def test_dovecot_restarted_under_the_watcher_reconnects_and_catches_up(live_app, owner, mailbox, processes, dovecot):
    app = live_app
    inbox_id = connected(app, owner, mailbox)
    processes("worker")
    processes("watcher")
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    dovecot.stop()
    mailbox.write("INBOX", [message(7, subject="Delivered while the server was down")])
    dovecot.start()
    wait_for(lambda: "Delivered while the server was down" in subjects(app, inbox_id), 40,
             "the catch-up sync after the reconnect", details=lambda: logs(processes))
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))


def test_two_watchers_never_share_an_inbox_and_a_killed_ones_are_taken_over_within_30s(
        live_app, owner, dovecot, processes):
    app = live_app
    accounts = [new_account(dovecot) for _ in range(12)]  # both watchers get a share but for odds of 1 in 2,048
    inbox_ids = [connected(app, owner, account) for account in accounts]
    processes("worker")
    # The default lease timings: the takeover measured here is the one a deployment gets.
    first = processes("watcher", IMAP_WATCH_HEARTBEAT="3")
    second = processes("watcher", IMAP_WATCH_HEARTBEAT="3")
    wait_until_live(app, inbox_ids, timeout=40, details=lambda: logs(processes))

    def holders() -> dict[int, str]:
        return {i: s["watcher"] for i, s in watch_statuses(app, inbox_ids).items()}

    wait_for(lambda: len(set(holders().values())) == 2, 30, "both watchers to hold a share",
             details=lambda: logs(processes))
    by_watcher: dict[str, list[int]] = {}
    for inbox_id, member in holders().items():
        by_watcher.setdefault(member, []).append(inbox_id)
    pids = {member: int(member.split(":")[1]) for member in by_watcher}
    assert set(pids.values()) == {first.process.pid, second.process.pid}
    assert_one_connection_per_inbox(dovecot, accounts)

    victim = first if len(by_watcher[_member_of(pids, first)]) else second
    victims_inboxes = by_watcher[_member_of(pids, victim)]
    victim.kill()
    killed_at = time.monotonic()
    survivor = _member_of(pids, second if victim is first else first)
    account_of = dict(zip(inbox_ids, accounts, strict=True))
    # Mail delivered right after the kill, while nobody watches those inboxes, is not lost.
    account_of[victims_inboxes[0]].append("INBOX", message(3, subject="During the takeover"))
    wait_for(lambda: set(holders().values()) == {survivor} and len(holders()) == len(inbox_ids), 35,
             "the survivor to hold every inbox", interval=0.2, details=lambda: logs(processes))
    assert time.monotonic() - killed_at <= 30
    wait_for(lambda: "During the takeover" in subjects(app, victims_inboxes[0]), 20,
             "the mail delivered during the takeover", details=lambda: logs(processes))
    assert_one_connection_per_inbox(dovecot, accounts)


def test_a_lease_is_taken_from_a_member_gone_from_the_member_set_and_never_from_a_live_one(redis_url):
    """A killed watcher's leases are taken once it misses its heartbeats, long before they would expire."""
    redis = Redis.from_url(redis_url)
    space = f"imap_inbox:lease-test-{uuid.uuid4().hex[:8]}:watch"
    first, second = (Leases(redis, space, member, member_ttl=1.5, lease_ttl=60) for member in ("first", "second"))
    first.heartbeat()
    second.heartbeat()
    assert first.acquire([1, 2]) == [1, 2]
    assert second.acquire([1, 2, 3]) == [3]  # the first is alive: its leases stay its own
    assert first.acquire([1]) == [1]  # its own lease, taken again
    time.sleep(2)
    assert second.heartbeat() == ["second"]  # the first missed its heartbeats: gone
    assert second.acquire([1, 2]) == [1, 2]  # its leases had 58 s left
    assert first.renew([1, 2]) == set()  # back after a stall, the first finds them lost and ends those watches
    assert first.heartbeat() == ["first", "second"]
    assert first.acquire([1, 2, 3]) == []  # the second is alive
    assert {first.holder(i) for i in (1, 2, 3)} == {"second"}


def test_a_change_while_a_sync_is_ending_waits_for_it_and_gets_a_sync_of_its_own(live_app, owner, mailbox):
    """RQ shows a sync job started until the moment after the job let go of the inbox's lock; that sync may have
    read INBOX before the change. The change was taken as handled then, and the message waited for the next
    event or the hourly sync; now it waits for the job to end and is synced by a job of its own."""
    from rq.job import JobStatus

    from plugins.imap_inbox.jobs import _existing_job, enqueue_sync, sync_running
    from plugins.imap_inbox.watcher.sync_trigger import SyncTrigger

    app = live_app
    inbox_id = connect_inbox(app, mailbox, owner)
    trigger = SyncTrigger(app)  # its thread is not started: each decision is asked for here
    with app.app_context():
        job = _existing_job(inbox_id)
        if job is None:
            enqueue_sync(inbox_id)
            job = _existing_job(inbox_id)
        assert job.get_status() == JobStatus.QUEUED
        assert trigger._enqueue(inbox_id, "exists", []) is True  # the queued sync will see the change

        job.set_status(JobStatus.STARTED)  # the job ran and let go of the lock; RQ has not marked it ended
        job.started_at = datetime.now(UTC)
        job.save()
        assert not sync_running(inbox_id)
        enqueued: list[int] = []
        assert trigger._enqueue(inbox_id, "exists", enqueued) is False and enqueued == []

        job.set_status(JobStatus.FINISHED)  # ended: the change gets its own sync
        assert trigger._enqueue(inbox_id, "exists", enqueued) is True and enqueued == [inbox_id]
        assert _existing_job(inbox_id).get_status() == JobStatus.QUEUED
        db.session.remove()


def _member_of(pids: dict[str, int], process: WatcherProcess) -> str:
    return next(member for member, pid in pids.items() if pid == process.process.pid)


def assert_one_connection_per_inbox(dovecot, accounts) -> None:
    """What Dovecot itself says: each account has exactly one IMAP session (the watch), not two."""
    def counts() -> dict[str, int]:
        found = {a.username: 0 for a in accounts}
        for row in json.loads(dovecot.doveadm("-f", "json", "who", "-1") or "[]"):
            if row.get("username") in found:
                found[row["username"]] += 1
        return found

    wait_for(lambda: set(counts().values()) == {1}, 15, "one IMAP session per account", interval=0.3,
             details=lambda: json.dumps(counts()))


def test_a_reply_by_push_fires_contact_replied_exactly_once(live_app, owner, mailbox, processes):
    app = live_app
    carla = add_carla(app)
    with app.app_context():
        db.session.add(AutomationRule(
            name="Tag responders", trigger="contact_replied", match="all",
            conditions=[{"key": "imap_email", "params": {"responded": True, "within_days": None, "inbox_id": None}}],
            actions=[{"key": "add_tag", "params": {"tag": "replied"}}]))
        db.session.commit()
    now = datetime.now(UTC).replace(microsecond=0)
    mailbox.append("Sent", message(1, sender=f"Team <{mailbox.username}>", to=CARLA, subject="Offer",
                                   message_id="<offer@team.example>", folder_date=now - timedelta(hours=1)))
    inbox_id = connected(app, owner, mailbox)
    processes("worker")
    processes("watcher")
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    mailbox.append("INBOX", message(2, subject="Re: Offer", in_reply_to="<offer@team.example>",
                                    message_id="<yes@customer.example>", folder_date=now))

    def tagged() -> bool:
        with app.app_context():
            return "replied" in db.session.get(Contact, carla).tags

    wait_for(tagged, 20, "the automation to tag Carla", details=lambda: logs(processes))
    # One more push and sync: no second run.
    mailbox.append("INBOX", message(3, subject="Another note", folder_date=now))
    wait_for(lambda: "Another note" in subjects(app, inbox_id), 20, "the second push")
    with app.app_context():
        runs = [(r.contact_id, r.event_type, r.status) for r in db.session.scalars(db.select(AutomationRun))]
    assert runs == [(carla, "contact_replied", "fired")]


@pytest.fixture(scope="module")
def dovecot_without_idle():
    """A second Dovecot that does not announce IDLE, as some servers and proxies do not."""
    from plugins.imap_inbox.testing.dovecot import DovecotServer

    capabilities = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ NAMESPACE UIDPLUS"
    with DovecotServer(extra_config=f"imap_capability = {capabilities}\n") as server:
        yield server


def test_a_server_without_idle_is_polled_and_the_list_says_why(live_app, owner, dovecot_without_idle, processes):
    app = live_app
    account = new_account(dovecot_without_idle)
    inbox_id = connected(app, owner, account)
    processes("worker")
    processes("watcher", IMAP_WATCH_POLL_SECONDS="3")
    # As long as wait_until_live allows: a watcher starting on a loaded machine needs it.
    wait_for(lambda: watch_statuses(app, [inbox_id]).get(inbox_id, {}).get("mode") == "polling", 30,
             "the inbox to be polled", details=lambda: logs(processes))
    assert watch_statuses(app, [inbox_id])[inbox_id]["reason"] == "no_idle"
    account.append("INBOX", message(1, subject="Found by polling"))
    wait_for(lambda: "Found by polling" in subjects(app, inbox_id), 20, "the polled sync to store the message",
             details=lambda: logs(processes))


# ---------------------------------------------------------------------------------------------------------
# The Sent folder: pushed by NOTIFY where the server offers it, else asked for at each IDLE renewal
# ---------------------------------------------------------------------------------------------------------

# Dovecot 2.3's own list after login, less NOTIFY: a server that offers IDLE but not NOTIFY.
WITHOUT_NOTIFY = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
                  "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
                  "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN "
                  "CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE "
                  "SAVEDATE LITERAL+ SPECIAL-USE")


@pytest.fixture(scope="module")
def dovecot_without_notify():
    from plugins.imap_inbox.testing.dovecot import DovecotServer

    with DovecotServer(extra_config=f"imap_capability = {WITHOUT_NOTIFY}\n") as server:
        yield server


def sent_reply(n: int, account: Mailbox, subject: str) -> bytes:
    return message(n, sender=f"Team <{account.username}>", to=CARLA, subject=subject)


def test_a_reply_we_send_is_pushed_by_notify_within_seconds(live_app, owner, dovecot, processes):
    app = live_app
    account = new_account(dovecot)
    inbox_id = connected(app, owner, account)
    processes("worker")
    processes("watcher")  # IDLE renewed every 4 minutes: only NOTIFY can bring the reply within seconds
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    assert watch_statuses(app, [inbox_id])[inbox_id]["sent_seconds"] == 0  # the server pushes Sent
    wait_for(lambda: no_sync_waiting(app), 30, "the syncs so far to end")

    account.append("Sent", sent_reply(1, account, "Sent from my phone"))
    wait_for(lambda: "Sent from my phone" in subjects(app, inbox_id, "Sent"), 15,
             "the reply sent elsewhere to be stored", interval=0.2, details=lambda: logs(processes))
    assert subjects(app, inbox_id) == set()  # nothing came to INBOX: Sent alone started the sync


def test_without_notify_a_sent_reply_comes_with_the_next_event(live_app, owner, dovecot_without_notify,
                                                                 processes):
    app = live_app
    account = new_account(dovecot_without_notify)
    inbox_id = connected(app, owner, account)
    processes("worker")
    processes("watcher")  # the default 4 minutes between IDLE renewals
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    assert watch_statuses(app, [inbox_id])[inbox_id]["sent_seconds"] == 240
    wait_for(lambda: no_sync_waiting(app), 30, "the syncs so far to end")

    account.append("Sent", sent_reply(1, account, "Our offer"))
    account.append("INBOX", message(2, subject="Re: Our offer"))
    wait_for(lambda: "Our offer" in subjects(app, inbox_id, "Sent") and "Re: Our offer" in subjects(app, inbox_id),
             15, "the reply and the answer", details=lambda: logs(processes))


def test_without_notify_a_sent_reply_alone_comes_at_the_next_idle_renewal(live_app, owner, dovecot_without_notify,
                                                                          processes, admin):
    from host_app.testing import ADMIN_PASSWORD, log_in

    app = live_app
    account = new_account(dovecot_without_notify)
    inbox_id = connected(app, owner, account)
    processes("worker")
    processes("watcher", IMAP_WATCH_IDLE_SECONDS="3")  # minutes in production; seconds here
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    page = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD).get("/settings/inboxes/").text
    assert "mail sent from other programs is looked for every minute" in page  # 3 s, worded in minutes
    wait_for(lambda: no_sync_waiting(app), 30, "the syncs so far to end")

    account.append("Sent", sent_reply(1, account, "Sent from the phone"))
    wait_for(lambda: "Sent from the phone" in subjects(app, inbox_id, "Sent"), 20,
             "the reply to be found at the next IDLE renewal", details=lambda: logs(processes))
    assert subjects(app, inbox_id) == set()


# ---------------------------------------------------------------------------------------------------------
# The per-server connection cap, and a lone watcher killed and started again
# ---------------------------------------------------------------------------------------------------------


def test_an_inbox_over_the_per_server_cap_is_polled_says_so_and_goes_live_when_room_frees(
        live_app, owner, dovecot, processes, admin):
    from host_app.testing import ADMIN_PASSWORD, log_in
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    app = live_app
    accounts = [new_account(dovecot) for _ in range(2)]
    inbox_ids = [connected(app, owner, account) for account in accounts]
    processes("worker")
    processes("watcher", IMAP_WATCH_MAX_PER_SERVER="1", IMAP_WATCH_POLL_SECONDS="3")

    def modes() -> dict[int, str]:
        return {i: s.get("mode") for i, s in watch_statuses(app, inbox_ids).items()}

    wait_for(lambda: sorted(modes().values()) == ["live", "polling"], 30, "one inbox live and one polled",
             details=lambda: logs(processes))
    live, polled = sorted(inbox_ids, key=lambda i: modes()[i] != "live")
    status = watch_statuses(app, [polled])[polled]
    assert (status["reason"], status["cap"]) == ("server_cap", 1)
    page = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD).get("/settings/inboxes/").text
    assert "Polling every minute" in page
    assert "the most connections to this server it may open (1) (IMAP_WATCH_MAX_PER_SERVER)" in page
    assert "WARNING" in logs(processes) and "IMAP_WATCH_MAX_PER_SERVER" in logs(processes)

    account_of = dict(zip(inbox_ids, accounts, strict=True))
    account_of[polled].append("INBOX", message(1, subject="Found by polling"))
    wait_for(lambda: "Found by polling" in subjects(app, polled), 20, "the polled inbox's new mail",
             details=lambda: logs(processes))

    with app.app_context():
        service.set_enabled(db.session.get(ImapInbox, live), False)  # its connection frees the one slot
    wait_for(lambda: modes().get(polled) == "live", 20, "the polled inbox to go live",
             details=lambda: logs(processes))
    account_of[polled].append("INBOX", message(2, subject="Pushed at last"))
    wait_for(lambda: "Pushed at last" in subjects(app, polled), 15, "the pushed mail", details=lambda: logs(processes))


def test_a_lone_watcher_killed_mid_idle_is_replaced_and_nothing_is_lost(live_app, owner, mailbox, processes):
    app = live_app
    inbox_id = connected(app, owner, mailbox)
    processes("worker")
    first = processes("watcher")
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))
    first.kill()
    mailbox.append("INBOX", message(1, subject="While no watcher ran"))
    mailbox.append("Sent", sent_reply(2, mailbox, "Sent while no watcher ran"))
    processes("watcher")
    wait_for(lambda: "While no watcher ran" in subjects(app, inbox_id)
             and "Sent while no watcher ran" in subjects(app, inbox_id, "Sent"), 30,
             "the catch-up sync of the new watcher", details=lambda: logs(processes))
    wait_until_live(app, [inbox_id], details=lambda: logs(processes))


def test_a_mailbox_signed_in_with_oauth_is_watched_with_its_access_token(crm_app_factory, oidc_provider,
                                                                          oauth_mailbox, owner, tmp_path):
    """The watcher signs in as the sync does (SASL with an access token from the stored refresh token): a
    mailbox connected with "Sign in with ..." is live and pushes new mail, instead of being refused a LOGIN."""
    oauth = oauth_config(oidc_provider)
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=ENCRYPTION_KEY, RQ_QUEUE=f"watch-{uuid.uuid4().hex[:8]}", **oauth)
    inbox_id = connect_oauth(app, oauth_mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    logins_before = len(dovecot_logins(oauth_mailbox.server, oauth_mailbox.username))
    started = []
    try:
        started.append(WorkerProcess(app, tmp_path / "worker.log", **oauth).start())
        started.append(WatcherProcess(app, tmp_path / "watcher.log", **FAST, **oauth).start())
        details = lambda: "\n".join(p.log_tail() for p in started)  # noqa: E731
        wait_until_live(app, [inbox_id], details=details)
        oauth_mailbox.append("INBOX", message(1, subject="Pushed to a signed-in mailbox"))
        wait_for(lambda: "Pushed to a signed-in mailbox" in subjects(app, inbox_id), 20,
                 "the pushed e-mail stored", details=details)
    finally:
        for process in started:
            process.stop()
    with app.app_context():
        from plugins.imap_inbox.models import ImapInbox

        assert db.session.get(ImapInbox, inbox_id).status != "needs_attention"
    logins = dovecot_logins(oauth_mailbox.server, oauth_mailbox.username)[logins_before:]
    assert len(logins) >= 2 and all("method=OAUTHBEARER" in line for line in logins)  # the watch and the sync
