"""The Dovecot test harness and mail generator, exercised against a real Dovecot."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from plugins.imap_inbox.testing import DovecotServer
from plugins.imap_inbox.testing import dovecot as dovecot_mod
from plugins.imap_inbox.testing.dovecot import DovecotError
from plugins.imap_inbox.testing.mailgen import generate_mailbox, make_message, malformed_corpus

ALICE = "alice@example.com"
BOB = "bob@example.com"



@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    with DovecotServer() as srv:
        srv.add_user(ALICE, "alice-pw")
        srv.add_user(BOB, "bob-pw")
        yield srv


@pytest.fixture(scope="module")
def no_special_use_server() -> Iterator[DovecotServer]:
    with DovecotServer(sent_folder="Sent Items", sent_special_use=False) as srv:
        srv.add_user(ALICE, "alice-pw")
        yield srv


def _list(imap: IMAPClient) -> dict[str, tuple[bytes, ...]]:
    return {name: flags for flags, _sep, name in imap.list_folders()}


def _sent_by_special_use(imap: IMAPClient) -> str | None:
    for name, flags in _list(imap).items():
        if b"\\Sent" in flags:
            return name
    return None


# --------------------------------------------------------------------------- TLS and login


def test_implicit_tls_login_verifies_certificate(server: DovecotServer) -> None:
    with server.client(ALICE) as imap:
        sock = imap.socket()
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getpeercert()  # only filled in when the chain was verified
        assert imap.noop()
    assert server.imaps_port not in (993, 143) and server.imap_port not in (993, 143)
    assert server.host == "127.0.0.1"


def test_starttls_login(server: DovecotServer) -> None:
    with server.client(ALICE, ssl=False) as imap:
        assert isinstance(imap.socket(), ssl.SSLSocket)
        assert imap.select_folder("INBOX", readonly=True)[b"READ-ONLY"]


def test_plaintext_login_refused_without_tls(server: DovecotServer) -> None:
    imap = IMAPClient(server.tls_only_host, port=server.imap_port, ssl=False, timeout=10)
    try:
        caps = imap.capabilities()
        assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps
        with pytest.raises(LoginError, match="PRIVACYREQUIRED|[Pp]laintext"):
            imap.login(ALICE, "alice-pw")
    finally:
        imap.shutdown()
    # Same port, after STARTTLS, the login works.
    with server.client(ALICE, ssl=False, host=server.tls_only_host) as imap:
        assert imap.noop()


def test_wrong_password_is_rejected(server: DovecotServer) -> None:
    with pytest.raises(LoginError):
        server.client(ALICE, "not-the-password")


@pytest.mark.parametrize("use_ssl", [True, False], ids=["imaps", "starttls"])
def test_wrong_ca_fails_verification(server: DovecotServer, use_ssl: bool) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        server.client(ALICE, ssl=use_ssl, ca_file=server.wrong_ca_file)


def test_capabilities(server: DovecotServer) -> None:
    with server.client(ALICE) as imap:
        caps = set(imap.capabilities())
        assert {b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"IDLE", b"UIDPLUS"} <= caps
        assert imap.enable("QRESYNC") == [b"QRESYNC"]
        status = imap.folder_status("INBOX", [b"HIGHESTMODSEQ", b"UIDVALIDITY"])
        assert status[b"HIGHESTMODSEQ"] >= 1 and status[b"UIDVALIDITY"] > 0


# --------------------------------------------------------------------------- folders


def test_sent_found_by_special_use(server: DovecotServer) -> None:
    with server.client(ALICE) as imap:
        assert _sent_by_special_use(imap) == "Sent"
        folders = _list(imap)
        assert b"\\Drafts" in folders["Drafts"] and b"\\Trash" in folders["Trash"]


def test_custom_sent_name_without_special_use(no_special_use_server: DovecotServer) -> None:
    with no_special_use_server.client(ALICE) as imap:
        folders = _list(imap)
        assert "Sent Items" in folders and "Sent" not in folders
        assert _sent_by_special_use(imap) is None
        assert b"SPECIAL-USE" in imap.capabilities()


def test_custom_sent_name_with_special_use() -> None:
    with DovecotServer(sent_folder="Gesendete Objekte") as srv:
        srv.add_user(ALICE, "pw")
        with srv.client(ALICE) as imap:
            assert _sent_by_special_use(imap) == "Gesendete Objekte"


def test_non_ascii_folder_maps_to_modified_utf7_maildir(server: DovecotServer) -> None:
    folder = "Éléments envoyés"
    raw = make_message(("Bob", BOB), ALICE, "in a utf-7 folder")
    assert server.write_maildir(BOB, folder, [raw]) == 1
    assert server.maildir(BOB, folder).name == "&AMk-l&AOk-ments envoy&AOk-s"
    with server.client(BOB) as imap:
        assert imap.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == 1


# --------------------------------------------------------------------------- storing mail


def test_write_maildir_2000_messages(server: DovecotServer) -> None:
    buckets: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    for folder, raw in generate_mailbox(1500, 500, owner=BOB, correspondents=300, seed=7):
        buckets[folder].append(raw)
    started = time.monotonic()
    assert server.write_maildir(BOB, "INBOX", buckets["INBOX"]) == 1500
    assert server.write_maildir(BOB, "Sent", buckets["Sent"], flags=["\\Seen"]) == 500
    assert time.monotonic() - started < 60
    server.warm(BOB)
    with server.client(BOB) as imap:
        assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1500
        uids = imap.search("ALL")
        assert uids == list(range(1, 1501))
        first_last = imap.fetch([uids[0], uids[-1]], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
                                                      "INTERNALDATE"])
        for uid, raw in ((uids[0], buckets["INBOX"][0]), (uids[-1], buckets["INBOX"][-1])):
            parsed = email.message_from_bytes(raw)
            header = first_last[uid][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
            assert parsed["Message-ID"] in header  # UIDs follow write order
            # imapclient hands INTERNALDATE back as naive local time.
            expected = email.utils.parsedate_to_datetime(parsed["Date"]).astimezone()
            assert first_last[uid][b"INTERNALDATE"] == expected.replace(tzinfo=None)
        imap.select_folder("Sent", readonly=True)
        flags = imap.fetch([1], ["FLAGS"])[1][b"FLAGS"]
        assert b"\\Seen" in flags
        assert imap.folder_status("Sent", [b"MESSAGES"])[b"MESSAGES"] == 500


def test_append_and_expunge(server: DovecotServer) -> None:
    server.create_folder(ALICE, "Appended")
    when = dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC)
    uids = [
        server.append(ALICE, "Appended", make_message(("Zoë", "zoe@example.org"), ALICE, f"Nº {i}"),
                      flags=["\\Seen"] if i == 0 else (), internaldate=when)
        for i in range(3)
    ]
    assert all(isinstance(u, int) for u in uids) and uids == sorted(uids)
    with server.client(ALICE) as imap:
        imap.select_folder("Appended", readonly=True)
        data = imap.fetch(uids, ["FLAGS", "INTERNALDATE", "ENVELOPE"])
        assert b"\\Seen" in data[uids[0]][b"FLAGS"]
        assert data[uids[0]][b"INTERNALDATE"].date() == dt.date(2024, 2, 29)
        assert data[uids[1]][b"ENVELOPE"].subject.startswith(b"=?utf-8?")
    server.expunge(ALICE, "Appended", [uids[1]])
    with server.client(ALICE) as imap:
        imap.select_folder("Appended", readonly=True)
        assert imap.search("ALL") == [uids[0], uids[2]]


def test_uidvalidity_changes_after_recreate(server: DovecotServer) -> None:
    server.append(ALICE, "Sent", make_message(ALICE, BOB, "before recreate"))
    with server.client(ALICE) as imap:
        before = imap.folder_status("Sent", [b"UIDVALIDITY", b"MESSAGES"])
    assert before[b"MESSAGES"] >= 1
    new_validity = server.recreate_folder(ALICE, "Sent")
    with server.client(ALICE) as imap:
        after = imap.folder_status("Sent", [b"UIDVALIDITY", b"MESSAGES"])
        assert _sent_by_special_use(imap) == "Sent"
    assert after[b"UIDVALIDITY"] == new_validity != before[b"UIDVALIDITY"]
    assert after[b"MESSAGES"] == 0


def test_restart_keeps_data_and_ports() -> None:
    with DovecotServer() as srv:
        srv.add_user(ALICE, "pw")
        uid = srv.append(ALICE, "INBOX", make_message(BOB, ALICE, "survives restart"))
        ports = (srv.imaps_port, srv.imap_port)
        validity = srv.uidvalidity(ALICE, "INBOX")
        srv.stop()
        assert not srv.running
        with pytest.raises(OSError):
            socket.create_connection((srv.host, ports[0]), timeout=2).close()
        srv.start()
        assert (srv.imaps_port, srv.imap_port) == ports
        with srv.client(ALICE) as imap:
            assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == validity
            assert imap.search("ALL") == [uid]
        srv.restart()
        with srv.client(ALICE, ssl=False) as imap:
            assert imap.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 1


def test_malformed_corpus_written_and_appended(server: DovecotServer) -> None:
    corpus = malformed_corpus()
    names = [name for name, _ in corpus]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert server.write_maildir(ALICE, "Malformed", [raw for _, raw in corpus]) == len(corpus)
    appended = 0
    for _name, raw in corpus:
        if not raw:
            continue  # Dovecot refuses to APPEND a zero-byte message
        server.append(ALICE, "MalformedAppend", raw)
        appended += 1
    with server.client(ALICE) as imap:
        assert imap.folder_status("Malformed", [b"MESSAGES"])[b"MESSAGES"] == len(corpus)
        assert imap.folder_status("MalformedAppend", [b"MESSAGES"])[b"MESSAGES"] == appended
        imap.select_folder("Malformed", readonly=True)
        envelopes = imap.fetch(imap.search("ALL"), ["ENVELOPE", "RFC822.SIZE"])
        assert len(envelopes) == len(corpus)


def test_warm_and_doveadm(server: DovecotServer) -> None:
    server.warm(ALICE)
    assert "INBOX" in server.doveadm("mailbox", "list", "-u", ALICE)


# --------------------------------------------------------------------------- errors


def test_missing_dovecot_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dovecot_mod, "_which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install dovecot-imapd"):
        DovecotServer()


def test_startup_failure_reports_log_path(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = DovecotServer(startup_timeout=5)
    original = DovecotServer._write_config

    def broken_config(self: DovecotServer) -> None:
        original(self)
        with open(self.conf_path, "a") as fh:
            fh.write("this_setting_does_not_exist = 1\n")

    monkeypatch.setattr(DovecotServer, "_write_config", broken_config)
    try:
        with pytest.raises(DovecotError) as excinfo:
            srv.start()
        assert str(srv.log_path) in str(excinfo.value)
        assert "this_setting_does_not_exist" in str(excinfo.value)
        assert not srv.running
    finally:
        srv.close()


def test_restart_fails_clearly_when_port_taken() -> None:
    srv = DovecotServer().start()
    try:
        srv.stop(grace=0)  # like a crash
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((srv.host, srv.imap_port))
            squatter.listen()
            with pytest.raises(DovecotError, match="in use"):
                srv.start()
        srv.start()
        assert srv.running
    finally:
        srv.close()


def test_unsearchable_base_dir_is_rejected() -> None:
    private = tempfile.mkdtemp()  # mode 0700
    try:
        with pytest.raises(DovecotError, match="o\\+x"):
            DovecotServer(base_dir=private)
    finally:
        os.rmdir(private)


# --------------------------------------------------------------------------- mailgen


def test_make_message_encodes_non_ascii() -> None:
    raw = make_message(("Jürgen Müller", "j@example.de"), [BOB, ("Zoë", "zoe@example.org")],
                       "Grüße aus Köln 東京", cc="Ана <ana@example.ru>",
                       in_reply_to="<a@example.com>", references=["<a@example.com>"],
                       headers={"X-Note": "naïve"}, raw_headers=[b"X-Raw: \xff"],
                       body="Hallo Grüße\n", date=dt.datetime(2024, 1, 2, 3, 4, 5))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.split(b"\r\n")[-1] == b"X-Raw: \xff"
    assert all(b < 0x80 for b in head.replace(b"\xff", b""))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["Subject"]) == "Grüße aus Köln 東京"
    assert msg["From"].addresses[0].display_name == "Jürgen Müller"
    assert msg["Cc"].addresses[0].display_name == "Ана"
    assert str(msg["X-Note"]) == "naïve"
    assert msg.get_content().replace("\r\n", "\n") == "Hallo Grüße\n"
    assert msg["Date"].datetime == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_generate_mailbox_is_deterministic_and_realistic() -> None:
    started = time.monotonic()
    msgs = list(generate_mailbox(2000, 500, seed=3))
    assert time.monotonic() - started < 20
    assert msgs == list(generate_mailbox(2000, 500, seed=3))
    assert msgs != list(generate_mailbox(2000, 500, seed=4))
    assert sum(folder == "INBOX" for folder, _ in msgs) == 2000
    assert sum(folder == "Sent" for folder, _ in msgs) == 500

    sent_ids: set[str] = set()
    replies_to_sent = lists = auto = noreply = 0
    charsets: set[str] = set()
    for folder, raw in msgs:
        msg = email.message_from_bytes(raw)  # compat32: fast enough for thousands
        head = raw.split(b"\r\n\r\n", 1)[0]
        for word in head.split(b"=?")[1:]:
            charsets.add(word.split(b"?", 1)[0].decode("ascii").lower())
        if folder == "Sent":
            sent_ids.add(msg["Message-ID"])
            assert ALICE in msg["From"]
            continue
        replies_to_sent += msg["In-Reply-To"] in sent_ids
        lists += msg["List-Id"] is not None
        auto += msg["Auto-Submitted"] == "auto-replied"
        noreply += "reply@" in msg["From"]
    assert {"utf-8", "iso-8859-1", "koi8-r", "shift_jis"} <= charsets
    assert replies_to_sent > 100 and lists > 100 and auto > 10 and noreply > 50

    for _folder, raw in msgs[::10]:  # the strict parser on a sample
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert not msg.defects, msg.defects
        assert "=?" not in str(msg["Subject"])  # every encoded word decodes
        assert msg["From"].addresses and msg["Date"].datetime.tzinfo is not None
        body = msg.get_body(("plain",))
        assert body is not None and body.get_content().strip()
