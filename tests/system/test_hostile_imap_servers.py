"""What a hostile or broken IMAP server (a real listener on loopback) can and cannot do to the CRM.

* The stored password only ever goes to the server it was entered for: pointing an inbox elsewhere
  (host, port, security, username or CA file) needs the password typed again, in the form and the service.
* The connection check is no port scanner: a closed port, a port without TLS and one speaking something
  else get one answer, and nothing a non-IMAP service sends is shown.
"""
from __future__ import annotations

import html
import re
import socket

import pytest

from host_app.extensions import db
from tests.support.hostile_imap import LoopbackServer, agreeable_imap
from tests.support.imap_helpers import connect_inbox

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
