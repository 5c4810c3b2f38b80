"""Connections cut at seeded random points never lose or duplicate mail.

A byte-level proxy (tests/support/faultproxy.py) sits between the sync and Dovecot;
TLS passes through it untouched. Each trial breaks one sync (sometimes two
in a row) at a random point: during the TLS handshake or the login, inside a
FETCH answer (nearly always in the middle of a header literal, sometimes in
the middle of a 100+ kB one), anywhere in either direction; by reset, by a
clean close or by a stall that only the read timeout ends. What follows is a
blip (reconnecting works), an outage (every new connection is reset) or a
flaky link (every connection breaks the same way). Then a clean, direct
sync must leave the database exactly as a fault-free sync of the same
mailbox leaves it.

The trials share one mailbox and one database and alternate between

* initial syncs of a fresh inbox (cut, resumed from its checkpoint),
* incremental syncs after the mailbox changed (new mail, expunged mail),
* a UIDVALIDITY change of the Sent folder (stored rows re-matched by Message-ID),

and now and then the mailbox changes again between the broken sync and its
retry, so every kind of resume is exercised, from many intermediate states.
The reference is a second inbox of the same account synced without faults
(through an unarmed proxy, whose byte trace tells where the next faulty
session will have its login and its FETCH answers); at the end a third
inbox synced from scratch must equal the reference too.

``FAULT_SEED=<n>`` replays a run; ``FAULT_TRIALS=<n>`` changes the number of
trials (default 100); ``FAULT_POLICIES=blip,outage`` restricts what follows a
cut. The seed is printed with every failure.
"""
from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from host_app.extensions import db
from plugins.imap_inbox import service
from plugins.imap_inbox.jobs import sync_inbox
from plugins.imap_inbox.models import ImapInbox
from plugins.imap_inbox.testing import mailgen
from plugins.mail import models as mail_models
from tests.support.faultproxy import DOWN, POLICIES, UP, Cut, FaultProxy, Trace
from tests.support.imap_helpers import make_owner
from tests.support.sync_dump import (
    canonical_dump,
    comparable_folder_states,
    diff_dumps,
    folder_states,
    inbox_row,
    message_rows,
    orphan_addresses,
)

TRIALS = int(os.environ.get("FAULT_TRIALS", "100"))
# What follows a cut, with weights; FAULT_POLICIES=blip,outage leaves out the others (e.g. to look past a known bug).
POLICY_WEIGHTS = {name: weight for name, weight in (("blip", 35), ("outage", 40), ("flaky", 25))
                  if name in os.environ.get("FAULT_POLICIES", ",".join(POLICIES)).split(",")}
BATCH = 25
READ_TIMEOUT = 2  # seconds; what a stalled connection costs
# not_imap: a connection cut during the greeting is "no IMAP server answered", retried later.
TRANSIENT_KINDS = {"server_error", "timeout", "tls_error", "connection_refused", "not_imap"}
# Malformed mail whose header literals are large (100 kB+), or that breaks parsers, or shares a Message-ID.
CORPUS_IN_FAULT_MAILBOX = (
    "very_long_unfolded_subject", "very_long_references_one_line", "very_long_references_folded",
    "huge_header_about_1mb", "nul_bytes_in_body", "nul_byte_in_subject",
    "missing_message_id", "empty_message", "raw_8bit_invalid_utf8_header", "date_year_10000",
    "message_id_with_spaces_and_duplicates",
)


def fault_seed() -> int:
    return int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))


@pytest.fixture
def fault_app(crm_app_factory, crm_database_url, private_redis):
    """The sync engine alone, small batches, a short read timeout, a queue of its own.

    On SQLite the database lives in /dev/shm, on PostgreSQL commits do not wait
    for the WAL flush: the trials commit thousands of batches and the fsync of
    each would dominate the run time.
    """
    config = dict(
        IMAP_FETCH_BATCH=BATCH,
        IMAP_TIMEOUT=READ_TIMEOUT,
        RQ_QUEUE=f"faults-{uuid.uuid4().hex[:8]}",
        REDIS_URL=private_redis.url(),
        IMAP_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    directory = None
    if crm_database_url.startswith("postgresql"):
        # Likewise, no WAL flush to disk per commit (what a server crash keeps is not what these trials test).
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True,
                                               "connect_args": {"options": "-c synchronous_commit=off"}}
    elif crm_database_url.startswith("sqlite") and os.path.isdir("/dev/shm"):
        directory = tempfile.mkdtemp(prefix="crm-faults-", dir="/dev/shm")
        path = Path(directory) / "crm.sqlite"
        shutil.copy(sa.engine.make_url(crm_database_url).database, path)
        config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    yield crm_app_factory(plugins={"mail": "plugins.mail", "imap_inbox": "plugins.imap_inbox"}, **config)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


class Trials:
    """The state shared by the trials: the mailbox, the proxies, the inboxes, the log printed on failure."""

    def __init__(self, app, mailbox, dovecot, seed: int):
        self.app = app
        self.mailbox = mailbox
        self.dovecot = dovecot
        self.seed = seed
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.owner = make_owner(app)
        self.raw: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
        self.fresh_profile: Trace | None = None
        self.login_profile: Trace | None = None
        self.reference_dump: dict[str, list[tuple]] = {}
        self.reference_states: dict[str, dict] = {}
        self.fired = Counter()
        self.generator_seeds = itertools.count(1000)
        self.protected: dict[str, set[int]] = {}  # UIDs of the malformed mail, which stays


    # ------------------------------------------------------------------ reporting

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n\nseed={self.seed} (replay: FAULT_SEED={self.seed})\nlast trials:\n"
                    + "\n".join(self.log[-12:]), pytrace=False)

    # ------------------------------------------------------------------ the mailbox

    def write(self, folder: str, messages: list[bytes]) -> None:
        self.mailbox.write(folder, messages)
        self.raw[folder].extend(messages)

    def fill(self) -> None:
        generated = list(mailgen.generate_mailbox(65, 25, owner=self.mailbox.username, seed=self.seed % 1000))
        for folder, group in itertools.groupby(generated, key=lambda item: item[0]):
            self.write(folder, [raw for _, raw in group])
        corpus = dict(mailgen.malformed_corpus())
        self.write("INBOX", [corpus[name] for name in CORPUS_IN_FAULT_MAILBOX])
        # Sent's UIDVALIDITY changes, and re-matching keeps each stored row: its messages share no
        # Message-ID and have readable dates (a re-written file gets a new INTERNALDATE, which a re-matched
        # row does not take over); both are known engine issues with their own test (test_reliability.py)
        # and must not mask what this run finds.
        self.write("Sent", [corpus["missing_message_id"], corpus["very_long_references_folded"]])
        with self.mailbox.client() as imap:
            for folder, count in (("INBOX", len(CORPUS_IN_FAULT_MAILBOX)), ("Sent", 2)):
                imap.select_folder(folder, readonly=True)
                self.protected[folder] = set(sorted(imap.search("ALL"))[-count:])

    def change_mailbox(self, reference: dict[str, list[tuple]]) -> str:
        """New mail in INBOX and Sent, some mail expunged (never the big malformed ones); returns what happened."""
        rng = self.rng
        new = {folder: rng.randrange(0, 7) for folder in ("INBOX", "Sent")}
        generated = mailgen.generate_mailbox(new["INBOX"], new["Sent"], owner=self.mailbox.username,
                                             seed=next(self.generator_seeds))
        for folder, group in itertools.groupby(generated, key=lambda item: item[0]):
            self.write(folder, [raw for _, raw in group])
        expunged = {}
        with self.mailbox.client() as imap:
            for folder in ("INBOX", "Sent"):
                uids = [row[0] for row in reference.get(folder, []) if row[0] not in self.protected.get(folder, ())]
                gone = rng.sample(uids, min(max(0, len(uids) - 40), rng.randrange(0, 6)))
                if gone:
                    imap.select_folder(folder)
                    imap.delete_messages(gone)
                    imap.expunge(gone)
                expunged[folder] = len(gone)
        return f"+{new['INBOX']}/-{expunged['INBOX']} INBOX, +{new['Sent']}/-{expunged['Sent']} Sent"

    def recreate_sent(self) -> str:
        """Delete and create Sent again (new UIDVALIDITY) with the same messages, in another order."""
        self.dovecot.recreate_folder(self.mailbox.username, "Sent")
        messages = list(self.raw["Sent"])
        self.raw["Sent"] = []
        self.rng.shuffle(messages)
        self.write("Sent", messages)
        self.protected["Sent"] = set()
        return f"Sent recreated with {len(messages)} messages"

    # ------------------------------------------------------------------ inboxes

    def connect(self, host: str, port: int, check: bool) -> int:
        with self.app.app_context():
            return service.create_inbox(
                name=f"{host}:{port}", host=host, port=port, security="ssl", username=self.mailbox.username,
                password=self.mailbox.password, owner_id=self.owner, ca_file=self.mailbox.ca_file,
                email=self.mailbox.username, check=check,
            ).id

    def delete(self, inbox_id: int) -> None:
        with self.app.app_context():
            service.delete_inbox(inbox_id)

    def route(self, inbox_id: int, port: int) -> None:
        """Point the inbox at the proxy or straight at Dovecot (only the port differs; nothing is re-matched)."""
        with self.app.app_context():
            db.session.execute(sa.update(ImapInbox).where(ImapInbox.id == inbox_id).values(port=port))
            db.session.commit()

    def sync(self, inbox_id: int) -> dict:
        with self.app.app_context():
            try:
                return sync_inbox(inbox_id)
            except Exception as exc:  # noqa: BLE001 - a crash is a finding: report it with the seed
                self.fail(f"the sync raised {type(exc).__name__}: {exc}")

    def dump(self, inbox_id: int) -> dict:
        with self.app.app_context():
            return canonical_dump(inbox_id)

    # ------------------------------------------------------------------ cut points

    def choose_cut(self, twin: Trace, first: bool) -> tuple[str, Cut]:
        """A random cut for a session that should look like ``twin`` (a fault-free one)."""
        rng = self.rng
        mode = "stall" if rng.random() < 0.04 else rng.choice(("rst", "fin"))
        login = self.login_bytes()
        answers = [(start, size) for up, start, size in twin.exchanges()
                   if size >= 1500 and start >= login[DOWN]]
        kinds = ["login", "bytes"] + (["fetch", "fetch", "fetch", "big_literal"] if answers and first else [])
        kind = rng.choice(kinds)
        if kind == "login":
            direction = rng.choice((UP, DOWN))
            return kind, Cut(direction, rng.randrange(0, login[direction]), mode)
        if kind == "fetch":
            start, size = rng.choice(answers)
            return kind, Cut(DOWN, start + rng.randrange(1, size), mode)
        if kind == "big_literal":
            start, size = max(answers, key=lambda a: a[1])
            return kind, Cut(DOWN, start + rng.randrange(size // 10, size - size // 10), mode)
        direction = rng.choice((UP, DOWN))
        total = max(1, twin.sent[direction] if first else twin.sent[direction] // 2)
        return kind, Cut(direction, rng.randrange(0, total), mode)

    def login_bytes(self) -> dict[str, int]:
        """Bytes each way up to the end of the LOGIN answer (the check_login session minus its LOGOUT)."""
        exchanges = self.login_profile.exchanges()
        logout_up, logout_start, _ = exchanges[-1]
        return {UP: self.login_profile.sent[UP] - logout_up, DOWN: logout_start}

    # ------------------------------------------------------------------ checks

    def check_after_cut(self, inbox_id: int, summary: dict, fired: bool, failures_before: int,
                        reference: dict, before: dict, where: str) -> None:
        status = summary.get("status")
        if status == "failed":
            if not fired:
                self.fail(f"{where}: the sync failed although no fault was injected: {summary}")
            if summary.get("error_kind") not in TRANSIENT_KINDS:
                self.fail(f"{where}: a cut connection was reported as {summary.get('error_kind')!r}: {summary}")
        elif status != "ok":
            self.fail(f"{where}: a cut connection ended the sync with status {status!r} "
                      f"(a network fault must be transient, retried with backoff): {summary}")
        with self.app.app_context():
            inbox = inbox_row(inbox_id)
            if status == "failed":
                text = f"{inbox.error} {inbox.error_hint}"
                if inbox.status != mail_models.ERROR or inbox.failures != failures_before + 1:
                    self.fail(f"{where}: after a cut the inbox is {inbox.status!r} with {inbox.failures} failures "
                              f"(expected 'error' and {failures_before + 1})")
                if not inbox.error or self.mailbox.password in text or "Traceback" in text:
                    self.fail(f"{where}: the error shown is not plain words: {text!r}")
                if inbox.next_sync_at is None:
                    self.fail(f"{where}: no retry was scheduled after a transient failure")
            if orphan_addresses(inbox_id):
                self.fail(f"{where}: address rows without their message (a half-written batch)")
            self.check_partial(inbox_id, reference, before, where)
            if inbox.progress_done > inbox.progress_total:
                self.fail(f"{where}: progress {inbox.progress_done}/{inbox.progress_total}")

    def check_partial(self, inbox_id: int, reference: dict, before: dict, where: str) -> None:
        """Whatever a broken sync left must be right: rows that exist now or existed before, checkpoints honest."""
        allowed = {folder: set(rows) for folder, rows in reference.items()}
        for folder, rows in before.items():
            allowed.setdefault(folder, set()).update(rows)
        for folder, row in message_rows(inbox_id):
            if row[0] > 0 and row not in allowed.get(folder, ()):
                self.fail(f"{where}: {folder} holds a row no fault-free sync has: uid={row[0]} id={row[1]!r} "
                          f"subject={str(row[3])[:60]!r}")
        for folder, state in folder_states(inbox_id).items():
            if state["initial_done"] or state["low_uid"] is None:
                continue
            server = [row[0] for row in reference.get(folder, [])]
            # A message the server hung up on is skipped this run (not stored, with a strike) and fetched again
            # by the next one, which check_complete then holds to the fault-free reference.
            skipped = set(state["skipped_uids"])
            expected = [uid for uid in server if uid >= state["low_uid"] and uid not in skipped]
            if state["stored_uids"] != expected:
                self.fail(f"{where}: {folder} checkpoint low_uid={state['low_uid']} promises UIDs {expected[:5]}... "
                          f"({len(expected)}) but {len(state['stored_uids'])} are stored")
            if state["message_count"] != len(state["stored_uids"]):
                self.fail(f"{where}: {folder} message_count={state['message_count']} but "
                          f"{len(state['stored_uids'])} stored")

    def check_complete(self, inbox_id: int, where: str) -> None:
        """After a clean sync: exactly the fault-free reference's rows and checkpoints, a healthy inbox."""
        with self.app.app_context():
            got = canonical_dump(inbox_id)
            if got != self.reference_dump:
                self.fail(f"{where}: after a clean sync the inbox differs from the fault-free sync:\n"
                          + diff_dumps(got, self.reference_dump))
            states = comparable_folder_states(inbox_id)
            if states != self.reference_states:
                self.fail(f"{where}: folder checkpoints differ from the fault-free sync:\n{states}\n!=\n"
                          f"{self.reference_states}")
            inbox = inbox_row(inbox_id)
            total = sum(len(rows) for rows in got.values())
            if (inbox.status, inbox.failures, inbox.error, inbox.message_count) != (mail_models.OK, 0, None, total):
                self.fail(f"{where}: after a clean sync the inbox is {inbox.status!r}, failures={inbox.failures}, "
                          f"error={inbox.error!r}, message_count={inbox.message_count} (stored {total})")
            if orphan_addresses(inbox_id):
                self.fail(f"{where}: address rows without their message")
            if inbox.progress_done != inbox.progress_total:
                self.fail(f"{where}: progress {inbox.progress_done}/{inbox.progress_total} after a complete sync")

    # ------------------------------------------------------------------ the run

    def sync_reference(self) -> Trace:
        """Sync the reference inbox (fault-free, through the unarmed proxy); returns its session's trace."""
        summary = self.sync(self.reference)
        if summary["status"] != "ok":
            self.fail(f"the fault-free reference sync failed: {summary}")
        with self.app.app_context():
            self.reference_dump = canonical_dump(self.reference)
            self.reference_states = comparable_folder_states(self.reference)
        return self.reference_proxy.last

    def start(self, proxy: FaultProxy, reference_proxy: FaultProxy) -> None:
        self.proxy, self.reference_proxy = proxy, reference_proxy
        # The reference: same account, another host name (the service refuses the same mailbox twice).
        self.reference = self.connect("127.0.0.2", reference_proxy.port, check=True)
        self.fresh_profile = self.sync_reference()
        stored = sum(len(rows) for rows in self.reference_dump.values())
        assert stored == sum(len(m) for m in self.raw.values()), stored
        # The inbox under test; its login check is the byte profile of connect + login + logout.
        self.inbox = self.connect("127.0.0.1", proxy.port, check=True)
        self.login_profile = proxy.last
        summary = self.sync(self.inbox)
        assert summary["status"] == "ok", summary
        self.check_complete(self.inbox, "the first fault-free sync")

    def trial(self, number: int, kind: str) -> None:
        """Change something, break one or two syncs, check what they left, sync cleanly, compare."""
        proxy = self.proxy
        if kind == "initial":
            self.delete(self.inbox)
            self.inbox = self.connect("127.0.0.1", proxy.port, check=False)
            change, twin, before = "fresh inbox", self.fresh_profile, {}
        else:
            before = self.dump(self.inbox)
            change = self.recreate_sent() if kind == "uidvalidity" else self.change_mailbox(self.reference_dump)
            # The reference syncs the same change first: its session is the twin of the one we break.
            twin = self.sync_reference()
        cuts = 2 if self.rng.random() < 0.3 else 1
        where = ""
        for step in range(cuts):
            cut_kind, cut = self.choose_cut(twin, first=step == 0)
            policy = self.rng.choices(list(POLICY_WEIGHTS), list(POLICY_WEIGHTS.values()))[0]
            where = f"trial {number} ({kind}: {change}; cut {step + 1}/{cuts}: {cut_kind}, {cut}, {policy})"
            self.log.append(where)
            with self.app.app_context():
                failures = inbox_row(self.inbox).failures
            seen = len(proxy.traces)
            proxy.arm(cut, policy)
            summary = self.sync(self.inbox)
            proxy.arm(None)
            proxy.drop_all()
            traces = proxy.traces_since(seen)
            fired = any(trace.cut_fired for trace in traces)
            self.log[-1] += f" -> {summary.get('status')} {summary.get('error_kind', '')}".rstrip()
            self.log[-1] += f" (cut; {len(traces)} connections)" if fired else " (not cut: the session was shorter)"
            self.check_after_cut(self.inbox, summary, fired, failures, self.reference_dump, before, where)
            if step == 0 and fired:
                self.fired[cut_kind] += 1
            if kind == "initial" and step == 0 and not fired and summary["status"] == "ok" and len(traces) == 1:
                self.fresh_profile = traces[0]  # a whole fault-free initial sync of the mailbox as it is now
            if summary["status"] == "ok":
                break
        if self.rng.random() < 0.25:
            # The mailbox changes before the retry: the resume must cope with new and expunged mail.
            self.log[-1] += "; then " + self.change_mailbox(self.reference_dump)
            self.sync_reference()
        self.route(self.inbox, self.dovecot.imaps_port)
        summary = self.sync(self.inbox)
        self.route(self.inbox, proxy.port)
        if summary["status"] != "ok":
            self.fail(f"{where}: the clean sync after the fault failed: {summary}")
        self.check_complete(self.inbox, f"{where}, then a clean sync")


def test_cut_connections_never_lose_or_duplicate_mail(fault_app, mailbox, dovecot):
    trials = Trials(fault_app, mailbox, dovecot, fault_seed())
    print(f"fault trials: seed={trials.seed}")
    trials.fill()
    with FaultProxy(dovecot.host, dovecot.imaps_port) as proxy, \
            FaultProxy(dovecot.host, dovecot.imaps_port, listen_host="127.0.0.2") as reference_proxy:
        trials.start(proxy, reference_proxy)
        uidvalidity_changes = 0
        for number in range(1, TRIALS + 1):
            kind = trials.rng.choices(("initial", "incremental", "uidvalidity"), (60, 35, 5))[0]
            if kind == "uidvalidity":
                uidvalidity_changes += 1
                if uidvalidity_changes > 4:
                    kind = "incremental"
            trials.trial(number, kind)

    # The reference itself: a brand-new inbox synced from scratch, without any proxy, agrees with it.
    fresh = trials.connect("localhost", dovecot.imaps_port, check=True)
    assert trials.sync(fresh)["status"] == "ok"
    trials.check_complete(fresh, "a fresh direct sync of the final mailbox")

    print("\n".join(trials.log))
    fired = sum(trials.fired.values())
    print(f"{fired} of {TRIALS} trials cut a connection; by kind: {dict(trials.fired)}")
    assert fired >= TRIALS * 0.85, (
        f"only {fired} of {TRIALS} trials actually cut a connection ({dict(trials.fired)}); seed={trials.seed}")
    assert trials.fired["login"] and trials.fired["fetch"] and trials.fired["big_literal"], dict(trials.fired)


# --------------------------------------------------------------------------- targeted faults


@pytest.fixture
def proxy(dovecot):
    with FaultProxy(dovecot.host, dovecot.imaps_port) as running:
        yield running


def login_answer_start(proxy: FaultProxy, mailbox) -> int:
    """Server -> client offset where the answer to LOGIN begins (from a fault-free login + logout)."""
    from plugins.imap_inbox.connection import ConnectionSettings, check_login

    check_login(ConnectionSettings(host=mailbox.host, port=proxy.port, username=mailbox.username,
                                   password=mailbox.password, ca_file=mailbox.ca_file, timeout=5))
    *_, (login_up, login_start, login_size), (logout_up, _, _) = proxy.last.exchanges()
    return login_start


@pytest.mark.parametrize("mode", ["fin", "rst"])
def test_connection_lost_while_waiting_for_the_login_answer_is_transient(fault_app, mailbox, proxy, mode):
    """The LOGIN command reached the server, the answer never came back: that says nothing about the password."""
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, connect

    cut = Cut(DOWN, login_answer_start(proxy, mailbox), mode)
    proxy.arm(cut)
    with pytest.raises(ImapConnectError) as caught:
        connect(ConnectionSettings(host=mailbox.host, port=proxy.port, username=mailbox.username,
                                   password=mailbox.password, ca_file=mailbox.ca_file, timeout=5))
    assert proxy.last.cut_fired
    assert caught.value.kind != "auth_failed", caught.value.message
    assert not caught.value.permanent, caught.value.to_dict()
    assert "password" not in caught.value.message.lower(), caught.value.message

    # Through the sync: an error with a retry, not "needs attention" (which stops all retries).
    trials = Trials(fault_app, mailbox, None, 0)
    mailbox.write("INBOX", [mailgen.make_message("a@customer.example", mailbox.username, "hello")])
    inbox_id = trials.connect(mailbox.host, proxy.port, check=True)
    proxy.arm(cut)
    summary = trials.sync(inbox_id)
    assert proxy.last.cut_fired
    assert summary["status"] == "failed", summary
    with fault_app.app_context():
        inbox = inbox_row(inbox_id)
        assert (inbox.status, inbox.failures) == (mail_models.ERROR, 1)
        assert inbox.next_sync_at is not None
    assert trials.sync(inbox_id)["status"] == "ok"


def test_connection_lost_mid_incremental_sync_then_as_much_mail_expunged_loses_nothing(fault_app, mailbox, proxy):
    """New mail is stored newest first; a sync cut after its first batch must not claim the older new mail.

    Then as many old messages are expunged as new ones are still missing, so
    the folder's message count adds up although the stored set is wrong: only
    an honest checkpoint finds the gap.
    """
    # A commit per batch (no groups of batches, folder_sync.py "Commits"): the cut comes after the first.
    fault_app.config["IMAP_COMMIT_EVERY"] = BATCH
    trials = Trials(fault_app, mailbox, None, 0)
    # Six batches of new mail: the sync reads one batch ahead of the one it stores (and has the next
    # FETCH on the wire), so a cut after the first commit still finds FETCH answers there.
    count = 6 * BATCH
    old = [mailgen.make_message(f"c{n}@customer.example", mailbox.username, f"old {n}",
                                message_id=f"<old{n}@customer.example>") for n in range(count)]
    new = [mailgen.make_message(f"c{n}@customer.example", mailbox.username, f"new {n}",
                                message_id=f"<new{n}@customer.example>") for n in range(count)]
    mailbox.write("INBOX", old)
    inbox_id = trials.connect(mailbox.host, proxy.port, check=True)
    assert trials.sync(inbox_id)["status"] == "ok"
    mailbox.write("INBOX", new)

    progress_calls, dropped = [], []

    def cut_the_network_after_first_batch(done: int, total: int) -> None:
        progress_calls.append(done)
        if done > count and not dropped:  # the first batch of new mail is committed
            dropped.append(done)
            # An outage, not a blip: a blip may hit the FETCH read ahead, and the sync would
            # then reconnect and finish, leaving nothing for this test to check.
            proxy.begin_outage()

    with fault_app.app_context():
        summary = sync_inbox(inbox_id, on_progress=cut_the_network_after_first_batch)
    proxy.arm(None)
    assert summary["status"] == "failed", summary
    missing = count - summary["new_messages"]
    assert missing > 0, summary

    with mailbox.client() as imap:
        imap.select_folder("INBOX")
        oldest = sorted(imap.search("ALL"))[:missing]  # as many as are still missing
        imap.delete_messages(oldest)
        imap.expunge(oldest)
        imap.select_folder("INBOX", readonly=True)
        server_uids = sorted(imap.search("ALL"))

    assert trials.sync(inbox_id)["status"] == "ok"
    with fault_app.app_context():
        stored = folder_states(inbox_id)["INBOX"]["stored_uids"]
        subjects = sorted(row[3] for row in canonical_dump(inbox_id)["INBOX"])
    assert stored == server_uids, (
        f"{len(set(server_uids) - set(stored))} messages never fetched, "
        f"{len(set(stored) - set(server_uids))} expunged ones still stored")
    assert subjects == sorted([f"old {n}" for n in range(missing, count)] + [f"new {n}" for n in range(count)])


def test_a_link_that_always_drops_mid_fetch_never_stores_mail_as_unreadable(fault_app, mailbox, proxy):
    """Every connection dies after the same number of bytes, inside the answer that carries a 150 kB header.

    That is the network, not the message: the sync may fail (and retry
    later) or leave the message for later, but it must not store it as
    unreadable, because a stored UID is never fetched again. Then the mailbox
    changes so that its message count adds up with what is stored (as many
    new messages as old ones expunged as messages were left out); once the
    link is good, a clean sync must hold exactly what a fault-free sync holds.
    """
    corpus = dict(mailgen.malformed_corpus())
    trials = Trials(fault_app, mailbox, None, 0)
    mailbox.write("INBOX", [mailgen.make_message(f"c{n}@customer.example", mailbox.username, f"before {n}")
                            for n in range(5)])
    mailbox.write("INBOX", [corpus["very_long_references_one_line"]])
    mailbox.write("INBOX", [mailgen.make_message(f"d{n}@customer.example", mailbox.username, f"after {n}")
                            for n in range(5)])
    inbox_id = trials.connect(mailbox.host, proxy.port, check=True)
    reference = trials.connect("localhost", mailbox.port, check=False)

    proxy.arm(Cut(DOWN, 60_000, "rst"), policy="flaky")
    summary = trials.sync(inbox_id)
    connections = len(proxy.traces)
    proxy.arm(None)
    assert any(trace.cut_fired for trace in proxy.traces), "the link never dropped"
    with fault_app.app_context():
        unreadable = [row for _, row in message_rows(inbox_id) if row[-2] and "could not give" in row[-2]]
        left_out = 11 - len(message_rows(inbox_id))
    assert not unreadable, (
        f"a dropped connection was taken for an unreadable message ({summary['status']} after {connections} "
        f"connections): {[(row[0], row[-2]) for row in unreadable]}")

    if left_out:
        with mailbox.client() as imap:
            imap.select_folder("INBOX")
            oldest = sorted(imap.search("ALL"))[:left_out]
            imap.delete_messages(oldest)
            imap.expunge(oldest)
        mailbox.write("INBOX", [mailgen.make_message(f"e{n}@customer.example", mailbox.username, f"later {n}")
                                for n in range(left_out)])
    assert trials.sync(reference)["status"] == "ok"
    trials.route(inbox_id, mailbox.port)
    assert trials.sync(inbox_id)["status"] == "ok"
    with fault_app.app_context():
        got, want = canonical_dump(inbox_id), canonical_dump(reference)
    assert got == want, f"{summary['status']} with {left_out} left out, then:\n" + diff_dumps(got, want)
