"""What a hostile or broken IMAP server (a real listener on loopback) can and cannot do to the CRM.

* The stored password only ever goes to the server it was entered for: pointing an inbox elsewhere
  (host, port, security, username or CA file) needs the password typed again, in the form and the service.
* The connection check is no port scanner: a closed port, a port without TLS and one speaking something
  else get one answer, and nothing a non-IMAP service sends is shown.
* A server sending a huge literal, endless lines or one endless line, or answering a byte at a time, stops
  the sync with plain words within the caps (plugins/imap_inbox/response_limits.py), and the reads stay
  bounded; a sync over its time limit resumes from its checkpoint next time.
"""
from __future__ import annotations

import functools
import html
import re
import socket
import time

import pytest

from host_app.extensions import db
from tests.support.faultproxy import FaultProxy
from tests.support.hostile_imap import LoopbackServer, agreeable_imap
from tests.support.imap_helpers import connect_inbox, message, stored, sync

BASE = "/settings/inboxes"


@pytest.fixture
def tls_listener(dovecot):
    """A TLS IMAP server on loopback with a certificate the test CA vouches for, that takes any LOGIN."""
    with LoopbackServer(agreeable_imap, cert_file=dovecot.cert_file, key_file=dovecot.key_file) as server:
        yield server


def edit_form(mailbox, owner_id: int, **overrides) -> dict:
    data = {"name": "Sales desk", "provider": "other", "host": mailbox.host, "username": mailbox.username,
            "password": "", "port": str(mailbox.port), "security": "ssl", "ca_file": mailbox.ca_file,
            "owner_id": str(owner_id), "extra_folders": ""}
    data.update(overrides)
    return data


@pytest.mark.parametrize("change", ["port", "host", "username", "security", "ca_file"])
def test_the_stored_password_is_not_sent_to_a_changed_server(app, admin_client, mailbox, owner, dovecot,
                                                              tls_listener, change):
    from plugins.imap_inbox.models import ImapInbox

    inbox_id = connect_inbox(app, mailbox, owner)
    changed = {"port": {"port": str(tls_listener.port)},
               "host": {"host": "localhost", "port": str(tls_listener.port)},
               "username": {"username": "someone-else@team.example", "port": str(tls_listener.port)},
               "security": {"security": "starttls", "port": str(dovecot.imap_port)},
               "ca_file": {"ca_file": dovecot.wrong_ca_file}}[change]

    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=edit_form(mailbox, owner, **changed))

    assert response.status_code == 200
    assert "the stored password is only ever sent to the server it was entered for" in response.text
    assert 'class="field has-error" id="field-password"' in response.text
    assert tls_listener.connections == 0 and not tls_listener.saw_login()
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        assert (inbox.host, inbox.port, inbox.username, inbox.security, inbox.ca_file) == (
            mailbox.host, mailbox.port, mailbox.username, "ssl", mailbox.ca_file)


def test_the_service_refuses_a_changed_server_without_the_password_even_unchecked(app, mailbox, owner,
                                                                                   tls_listener):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        with pytest.raises(service.InvalidInboxSettings) as caught:
            service.update_inbox(inbox, port=tls_listener.port, check=False)
        assert caught.value.field == "password"
        db.session.rollback()
        assert db.session.get(ImapInbox, inbox_id).port == mailbox.port
        # A rename needs no password; typing it again for a new server sends what was typed, there only.
        service.update_inbox(inbox, name="Renamed")
        service.update_inbox(inbox, port=tls_listener.port, password="typed-for-the-new-server")
    assert tls_listener.saw_secret("typed-for-the-new-server")
    assert not tls_listener.saw_secret(mailbox.password)


# ---------------------------------------------------------------------------
# The connection check is no port scanner and no banner grabber
# ---------------------------------------------------------------------------

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 SECRET-BANNER\r\n"


def banner(data: bytes):
    def session(conn):
        conn.send(data)
        conn.read_line()  # wait for the client to give up
    return session


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def connect_error_box(page: str) -> str:
    match = re.search(r'<div class="form-problem" role="alert" id="connect-error">(.*?)</div>', page, re.S)
    assert match, "no connection problem shown"
    return html.unescape(re.sub(r"\s+", " ", match.group(1))).strip()


def test_closed_plain_tls_and_other_services_get_one_answer_without_their_bytes(app, admin_client, owner,
                                                                                  dovecot, mailbox):
    ssh = LoopbackServer(banner(SSH_BANNER))
    tls_http = LoopbackServer(banner(b"HTTP/1.1 400 Bad Request SECRET-BANNER\r\n\r\n"),
                              cert_file=dovecot.cert_file, key_file=dovecot.key_file)
    try:
        targets = {
            "closed": (closed_port(), "ssl"),
            "IMAP without TLS": (dovecot.imap_port, "ssl"),
            "SSH with SSL/TLS": (ssh.port, "ssl"),
            "SSH with STARTTLS": (ssh.port, "starttls"),
            "HTTP over TLS": (tls_http.port, "ssl"),
        }
        answers = {}
        for what, (port, security) in targets.items():
            response = admin_client.post(f"{BASE}/new", data={
                "name": "Probe", "provider": "other", "host": "127.0.0.1", "port": str(port),
                "security": security, "username": mailbox.username, "password": mailbox.password,
                "ca_file": dovecot.ca_file, "owner_id": str(owner)})
            assert response.status_code == 200, what
            assert "SECRET-BANNER" not in response.text and "SSH-2.0" not in response.text, what
            label = "STARTTLS" if security == "starttls" else "SSL/TLS"
            answers[what] = connect_error_box(response.text).replace(f"with {label} on 127.0.0.1 port {port}",
                                                                     "with SECURITY on HOST port PORT")
    finally:
        ssh.close()
        tls_http.close()
    assert len(set(answers.values())) == 1, answers
    assert "No IMAP server answered" in answers["closed"]
    assert not ssh.saw_login() and not tls_http.saw_login()


# ---------------------------------------------------------------------------
# A server that sends too much, or too slowly, meets the caps of response_limits.py
# ---------------------------------------------------------------------------

# Small caps, so a test proves them in seconds; the defaults are the same code with larger numbers.
CAPS = {"IMAP_MAX_LITERAL_BYTES": 1_000_000, "IMAP_MAX_LINE_BYTES": 1_000_000,
        "IMAP_MAX_RESPONSE_BYTES": 4_000_000}
# What a hostile server offers before giving up: without the caps the sync would read all of it.
OFFERED = 300_000_000


class Flood:
    """After LOGIN, answers the first command with ``head`` and then ``chunk`` again and again, counting
    the bytes it manages to send (the client's reads, plus what the kernel buffers on the way)."""

    def __init__(self, head: bytes, chunk: bytes, *, delay: float = 0.0):
        self.head, self.chunk, self.delay = head, chunk, delay
        self.sent = 0

    def __call__(self, conn, tag, line):
        conn.send(self.head)
        self.sent += len(self.head)
        while self.sent < OFFERED:
            conn.send(self.chunk)  # raises once the client has shut the connection: the session ends
            self.sent += len(self.chunk)
            if self.delay:
                time.sleep(self.delay)
        return True


def hostile_inbox(app, dovecot, owner, port: int) -> int:
    from plugins.imap_inbox import service

    with app.app_context():
        return service.create_inbox(name="Hostile", host="127.0.0.1", port=port, security="ssl",
                                    username="victim@team.example", password="pw-hostile", owner_id=owner,
                                    ca_file=dovecot.ca_file, check=False).id


def sync_against(app, dovecot, owner, flood: Flood) -> tuple[dict, object, float]:
    from plugins.imap_inbox.models import ImapInbox

    session = functools.partial(agreeable_imap, after_login=flood)
    with LoopbackServer(session, cert_file=dovecot.cert_file, key_file=dovecot.key_file) as server:
        inbox_id = hostile_inbox(app, dovecot, owner, server.port)
        started = time.monotonic()
        summary = sync(app, inbox_id)
        took = time.monotonic() - started
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        db.session.expunge(inbox)
    return summary, inbox, took


@pytest.mark.parametrize("attack, flood", [
    # A LIST reply announcing a 2 GB literal (the sync grew to 1.5 GB in 36 s before the caps).
    ("huge literal", Flood(b'* LIST () "/" {2000000000}\r\n', b"x" * 65536)),
    # Endless short untagged lines: each one is fine, together they are not.
    ("endless lines", Flood(b"", b"* 1 EXISTS " + b"y" * 1000 + b"\r\n")),
    # One line that never ends.
    ("endless line", Flood(b"* OK ", b"z" * 65536)),
])
def test_a_server_sending_too_much_stops_the_sync_with_plain_words_and_bounded_reads(crm_app_factory, dovecot,
                                                                                     owner, attack, flood):
    app = crm_app_factory(**CAPS)
    summary, inbox, took = sync_against(app, dovecot, owner, flood)

    assert summary["status"] == "failed" and summary["error_kind"] == "too_much_data", summary
    assert "The server sent more data than expected" in inbox.error
    assert "continues where this one stopped" in inbox.error_hint
    # Read at most the cap plus what the kernel holds in its socket buffers, never the 300 MB offered.
    assert flood.sent < 40_000_000, (attack, flood.sent)
    assert took < 60


def test_a_server_answering_a_byte_at_a_time_is_cut_off_at_the_command_time_limit(crm_app_factory, dovecot,
                                                                                 owner):
    # Each byte comes well within the socket timeout, so only the per-command wall time can stop it.
    app = crm_app_factory(IMAP_COMMAND_SECONDS=3, IMAP_TIMEOUT=30)
    flood = Flood(b"* OK ", b"a", delay=0.2)
    summary, inbox, took = sync_against(app, dovecot, owner, flood)

    assert summary["status"] == "failed" and summary["error_kind"] == "too_slow", summary
    assert "answered too slowly" in inbox.error and "3 seconds" in inbox.error
    assert took < 15


def test_a_sync_over_its_time_limit_stops_and_the_next_one_resumes_from_the_checkpoint(crm_app_factory, mailbox,
                                                                                      owner):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    mailbox.write("INBOX", [message(n) for n in range(1, 121)])
    # A slow link: 120 messages in batches of 5 need 15 s or more at 4 kB/s, far longer than the run's 6 seconds,
    # which leave a loaded machine (two test passes at once) time for the login and a first batch or two.
    with FaultProxy(mailbox.host, mailbox.port, down_rate=4_000) as slow_link:
        limited = crm_app_factory(IMAP_SYNC_SECONDS=6, IMAP_FETCH_BATCH=5)
        with limited.app_context():
            inbox_id = service.create_inbox(name="Slow", host=slow_link.host, port=slow_link.port, security="ssl",
                                            username=mailbox.username, password=mailbox.password,
                                            owner_id=owner, ca_file=mailbox.ca_file, check=False).id
        started = time.monotonic()
        first = sync(limited, inbox_id)
        took = time.monotonic() - started
        assert first["status"] == "failed" and first["error_kind"] == "too_slow", first
        assert took < 20
        with limited.app_context():
            assert "the sync ran longer than its limit of 6 seconds" in db.session.get(ImapInbox, inbox_id).error
        kept = len(stored(limited, inbox_id))
        assert 0 < kept < 120  # whole batches were committed before the limit

        second = sync(crm_app_factory(IMAP_FETCH_BATCH=5), inbox_id)
    assert second["status"] == "ok", second
    rows = stored(limited, inbox_id)
    assert len(rows) == 120 and len({row["uid"] for row in rows}) == 120


# ---------------------------------------------------------------------------
# The watcher's own asyncio client (plugins/imap_inbox/watcher/idle_client.py) meets the same caps
# ---------------------------------------------------------------------------

WATCH_CAPS = {"IMAP_MAX_LITERAL_BYTES": "1000000", "IMAP_MAX_LINE_BYTES": "1000000",
              "IMAP_MAX_RESPONSE_BYTES": "4000000", "IMAP_COMMAND_SECONDS": "3",
              "IMAP_WATCH_HEARTBEAT": "1", "IMAP_WATCH_RETRY_FIRST": "1"}


class FloodEveryConnection:
    """After LOGIN, answers the watcher's EXAMINE with ``head`` and then ``chunk`` again and again, on every
    connection (the watch retries), recording how many bytes each connection managed to push."""

    def __init__(self, head: bytes, chunk: bytes, *, delay: float = 0.0):
        self.head, self.chunk, self.delay = head, chunk, delay
        self.sent: list[int] = []

    def __call__(self, conn, tag, line):
        index = len(self.sent)
        self.sent.append(0)
        data = self.head
        while self.sent[index] < OFFERED:
            conn.send(data)  # raises once the watcher has shut the connection: the session ends
            self.sent[index] += len(data)
            data = self.chunk
            if self.delay:
                time.sleep(self.delay)
        return True


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kilobytes = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kilobytes / 1024


@pytest.mark.parametrize("attack, flood, words", [
    # Endless short untagged lines: the old client kept every one of them as part of the answer.
    ("endless lines", FloodEveryConnection(b"", b"* 1 RECENT " + b"y" * 1000 + b"\r\n"),
     "the server sent more data than expected (one answer was larger than"),
    # One line of ever more literals, each within the old client's 1 MB literal check.
    ("chained literals", FloodEveryConnection(b"* 1 FETCH (BODY[] {900000}\r\n",
                                              b"x" * 900_000 + b" {900000}\r\n"),
     "the server sent more data than expected (one line was longer than"),
    ("huge literal", FloodEveryConnection(b'* LIST () "/" {2000000000}\r\n', b"x" * 65536),
     "the server sent more data than expected (it announced a block of"),
    # A line every 0.2 s, each well within the socket timeout: only the command's wall time stops EXAMINE.
    ("drip", FloodEveryConnection(b"", b"* OK still looking\r\n", delay=0.2),
     "the server answered too slowly (it took longer than 3 seconds to answer one command)"),
])
def test_a_hostile_server_cannot_fill_the_watchers_memory_or_hold_its_connection(crm_app_factory, dovecot, owner,
                                                                                 tmp_path, attack, flood, words):
    from cryptography.fernet import Fernet

    from plugins.imap_inbox.models import ImapInbox
    from plugins.imap_inbox.watcher.watch_words import describe
    from tests.support.reliability_helpers import wait_for
    from tests.support.watcher_helpers import WatcherProcess, watch_statuses

    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=Fernet.generate_key().decode(), RQ_QUEUE=f"watch-{time.time_ns()}")
    session = functools.partial(agreeable_imap, after_login=flood)
    with LoopbackServer(session, cert_file=dovecot.cert_file, key_file=dovecot.key_file) as server:
        inbox_id = hostile_inbox(app, dovecot, owner, server.port)
        watcher = WatcherProcess(app, tmp_path / "watcher.log", **WATCH_CAPS).start()
        try:
            def reason() -> str:
                return watch_statuses(app, [inbox_id]).get(inbox_id, {}).get("reason") or ""

            wait_for(lambda: words in reason(), 60, f"the watch to say {words!r}",
                     details=lambda: f"status: {reason()!r}, sent: {flood.sent}\n{watcher.log_tail()}")
            peak = peak_rss_mb(watcher.process.pid)
            with app.app_context():
                detail = describe([db.session.get(ImapInbox, inbox_id)])[inbox_id]["detail"]
        finally:
            watcher.stop()
    # What the inbox list says about the watch, in plain words.
    assert detail.startswith(f"the watcher is reconnecting: {words}"), detail
    # Each connection pushed at most the caps plus what the kernel buffers on the way, never the 300 MB
    # offered, and the watcher process never held more than a Flask app's worth of memory.
    assert max(flood.sent) < 40_000_000, (attack, flood.sent)
    assert peak < 250, (attack, peak)
