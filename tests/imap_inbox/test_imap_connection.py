"""Logging in to a real Dovecot: verified TLS only, and every failure explained in plain words."""
from __future__ import annotations

import contextlib
import logging
import socket
import threading

import pytest

from plugins.imap_inbox.connection import (
    ConnectionSettings,
    ImapConnectError,
    check_login,
    classify_error,
    connect,
    is_public_address,
)
from plugins.imap_inbox.testing.dovecot import DovecotServer


def settings_for(mailbox, **overrides) -> ConnectionSettings:
    values = dict(host=mailbox.host, port=mailbox.port, security="ssl", username=mailbox.username,
                  password=mailbox.password, ca_file=mailbox.ca_file, timeout=10)
    values.update(overrides)
    return ConnectionSettings(**values)


def assert_no_secret(error: ImapConnectError, password: str) -> None:
    for text in (error.message, error.hint, str(error), repr(error), repr(error.__cause__ or "")):
        assert password not in text


def test_repr_never_shows_the_password():
    settings = ConnectionSettings(host="imap.example.com", port=993, username="u@example.com",
                                  password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)


@pytest.mark.parametrize("kwargs, words", [
    ({"security": "none"}, "unencrypted IMAP is not allowed"),
    ({"security": "plain"}, "unencrypted IMAP is not allowed"),
    ({"port": 0}, "between 1 and 65535"),
    ({"port": "abc"}, "must be a number"),
    ({"host": "  "}, "server name is missing"),
])
def test_settings_refuse_plaintext_and_nonsense(kwargs, words):
    values = dict(host="imap.example.com", port=993, username="u", password="p")
    values.update(kwargs)
    with pytest.raises(ValueError, match=words):
        ConnectionSettings(**values)


def test_implicit_tls_login(mailbox):
    client = connect(settings_for(mailbox))
    try:
        assert client.ssl
        assert b"IMAP4REV1" in client.capabilities()
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.logout()


@pytest.mark.parametrize("use_tls_only_host", [False, True])
def test_starttls_login(mailbox, dovecot, use_tls_only_host):
    host = dovecot.tls_only_host if use_tls_only_host else dovecot.host
    client = connect(settings_for(mailbox, host=host, port=dovecot.imap_port, security="starttls"))
    try:
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")  # the plain socket was upgraded
    finally:
        client.logout()


def test_check_login_succeeds_quietly(mailbox):
    assert check_login(settings_for(mailbox)) is None


def test_non_ascii_password_logs_in_with_authenticate_plain(dovecot):
    dovecot.add_user("umlaut@team.example", "pässwörd-ü")
    client = connect(ConnectionSettings(host=dovecot.host, port=dovecot.imaps_port, username="umlaut@team.example",
                                        password="pässwörd-ü", ca_file=dovecot.ca_file))
    client.logout()


def test_wrong_password_is_auth_failed_permanent_and_never_echoed(mailbox):
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, password="Wrong-Pass-123"))
    error = caught.value
    assert error.kind == "auth_failed"
    assert error.permanent is True
    assert "rejected the user name or password" in error.message
    assert "app password" in error.hint
    assert_no_secret(error, "Wrong-Pass-123")


def test_gmail_hint_mentions_app_passwords():
    from imapclient.exceptions import LoginError

    settings = ConnectionSettings(host="imap.gmail.com", port=993, username="a@gmail.com", password="pw-x")
    error = classify_error(LoginError(
        "b'[ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)'"
    ), settings)
    assert error.kind == "app_password_required" and error.permanent
    assert "App passwords" in error.hint
    disabled = classify_error(LoginError("b'[ALERT] Your account is not enabled for IMAP use. (Failure)'"), settings)
    assert disabled.kind == "imap_disabled" and "Enable IMAP" in disabled.hint


def test_password_echoed_by_a_server_is_scrubbed():
    from imapclient.exceptions import LoginError

    settings = ConnectionSettings(host="imap.example.com", port=993, username="a", password="S3cret-Value")
    error = classify_error(LoginError("b'NO login failed for a/S3cret-Value'"), settings)
    assert "S3cret-Value" not in error.message and "***" in error.message


def test_untrusted_certificate_is_explained_with_the_host_name_and_ca_file(mailbox, dovecot):
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, ca_file=dovecot.wrong_ca_file))
    error = caught.value
    assert error.kind == "certificate_untrusted"
    assert error.permanent
    assert "not signed by a certificate authority the CRM trusts" in error.message
    assert "exactly the one your provider gives" in error.hint
    assert "CA file" in error.hint and "CA directory (CRM_IMAP_CA_DIR)" in error.hint
    assert "upload the PEM file" in error.hint


def test_without_the_private_ca_the_system_store_does_not_trust_the_server(mailbox):
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, ca_file=None))
    assert caught.value.kind == "certificate_untrusted"


def test_certificate_is_checked_against_the_host_name_not_the_address():
    # The certificate names imap.team.example and the loopback addresses, not "localhost": connecting
    # as localhost reaches 127.0.0.1, an address the certificate covers, and must still be refused.
    from tests.support.mailbox import Mailbox

    with DovecotServer(cert_names=("imap.team.example",)) as server:
        server.add_user("names@team.example", "pw-names-1")
        mailbox = Mailbox(server, "names@team.example", "pw-names-1")
        with pytest.raises(ImapConnectError) as caught:
            connect(settings_for(mailbox, host="localhost"))
        error = caught.value
        assert error.kind == "certificate_name_mismatch" and error.permanent
        assert "not made out to the name localhost" in error.message
        assert "exact host name your provider gives" in error.hint
        connect(settings_for(mailbox, host="127.0.0.1")).logout()  # the address in the certificate works


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_an_unusable_ca_file_gets_one_message_whether_missing_or_not_pem(mailbox, tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, ca_file=str(path)))
    error = caught.value
    assert error.kind == "ca_file_invalid" and error.permanent
    assert error.message == "This CA file cannot be used: it is missing, unreadable or not a PEM certificate."
    assert "CA directory (CRM_IMAP_CA_DIR)" in error.hint


@pytest.mark.parametrize("where", ["outside", "missing", "not_pem", "symlink_out"])
def test_a_ca_file_outside_the_ca_directory_is_never_opened(mailbox, tmp_path, where):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "notes.pem").write_text("not a certificate\n")
    (ca_dir / "out.pem").symlink_to(mailbox.ca_file)
    path = {"outside": mailbox.ca_file, "missing": str(ca_dir / "gone.pem"), "not_pem": str(ca_dir / "notes.pem"),
            "symlink_out": str(ca_dir / "out.pem")}[where]
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, ca_file=path, ca_dir=str(ca_dir)))
    assert caught.value.kind == "ca_file_invalid"
    assert caught.value.message.startswith(f"This CA file cannot be used. Enter the full path of a PEM certificate "
                                           f"inside {ca_dir}")


def test_ssl_tls_to_the_starttls_port_says_the_port_did_not_answer_with_tls(mailbox, dovecot):
    # Dovecot's plain port greets in clear text and offers STARTTLS: implicit TLS finds no TLS there.
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, port=dovecot.imap_port))
    error = caught.value
    assert error.kind == "no_tls" and error.permanent
    assert error.message == f"No IMAP server answered with SSL/TLS on {mailbox.host} port {dovecot.imap_port}."
    assert "993" in error.hint and "STARTTLS" in error.hint
    assert "certificate" not in (error.message + error.hint).lower()


def test_ssl_tls_to_a_plain_text_service_is_no_tls():
    """A service that is not TLS at all (here one that greets in clear text and answers garbage)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn, contextlib.suppress(ConnectionError):  # the client may hang up first, as it should
            conn.sendall(b"* OK plain-text IMAP here\r\n")
            conn.recv(4096)  # the TLS ClientHello, which it does not understand
            conn.sendall(b"* BAD what was that\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(ImapConnectError) as caught:
            connect(ConnectionSettings(host="127.0.0.1", port=port, security="ssl", username="u", password="p",
                                       timeout=10))
    finally:
        thread.join(10)
        listener.close()
    assert caught.value.kind == "no_tls"
    assert f"No IMAP server answered with SSL/TLS on 127.0.0.1 port {port}." == caught.value.message


def test_no_tls_on_port_143_names_both_ports():
    import ssl

    error = classify_error(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
                           ConnectionSettings(host="imap.example.com", port=143, security="ssl"))
    assert error.kind == "no_tls"
    assert error.message == "No IMAP server answered with SSL/TLS on imap.example.com port 143."
    assert "SSL/TLS is usually port 993, STARTTLS port 143" in error.hint


def test_a_server_that_accepts_but_never_answers_times_out_in_plain_words():
    # The kernel completes the TCP handshake for the backlog; nobody ever reads or writes.
    listener = socket.create_server(("127.0.0.1", 0), backlog=4)
    port = listener.getsockname()[1]
    try:
        for security in ("ssl", "starttls"):
            with pytest.raises(ImapConnectError) as caught:
                connect(ConnectionSettings(host="127.0.0.1", port=port, security=security, username="u",
                                           password="p", timeout=0.5))
            assert caught.value.kind == "timeout" and caught.value.permanent is False
            assert caught.value.message == f"127.0.0.1:{port} did not answer within 0.5 seconds."
    finally:
        listener.close()


def test_unknown_host(mailbox):
    with pytest.raises(ImapConnectError) as caught:
        connect(settings_for(mailbox, host="imap.does-not-exist.invalid"))
    assert caught.value.kind == "host_not_found"
    assert "imap.does-not-exist.invalid" in caught.value.message


def test_server_down_is_connection_refused_and_transient():
    with DovecotServer() as server:
        server.add_user("down@team.example", "pw-down-1")
        port = server.imaps_port
        server.stop()
        with pytest.raises(ImapConnectError) as caught:
            connect(ConnectionSettings(host=server.host, port=port, username="down@team.example",
                                       password="pw-down-1", ca_file=server.ca_file, timeout=5))
        assert caught.value.kind == "connection_refused"
        assert caught.value.permanent is False
        server.start()  # back on the same port: the same settings work again
        connect(ConnectionSettings(host=server.host, port=port, username="down@team.example",
                                   password="pw-down-1", ca_file=server.ca_file, timeout=5)).logout()


class StartTLSStripper:
    """A man in the middle that removes STARTTLS from the server's capabilities (a downgrade attack)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_client = bytearray()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(self.target)
        self.threads = [threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True),
                        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, source, sink, strip):
        try:
            while data := source.recv(65536):
                if strip:
                    data = data.replace(b" STARTTLS", b"")
                else:
                    self.from_client.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_starttls_missing_is_refused_and_the_password_never_sent(mailbox, dovecot):
    proxy = StartTLSStripper((dovecot.tls_only_host, dovecot.imap_port))
    try:
        with pytest.raises(ImapConnectError) as caught:
            connect(settings_for(mailbox, host="127.0.0.1", port=proxy.port, security="starttls"))
    finally:
        proxy.close()
    assert caught.value.kind == "starttls_unavailable"
    assert caught.value.permanent
    assert "993" in caught.value.hint
    assert b"LOGIN" not in bytes(proxy.from_client).upper()
    assert mailbox.password.encode() not in bytes(proxy.from_client)


def test_private_hosts_are_blocked_after_resolution_when_configured(crm_app_factory, mailbox):
    app = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=True)
    with app.app_context():
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(ImapConnectError) as caught:
                connect(settings_for(mailbox, host=host))
            assert caught.value.kind == "private_host_blocked"
            # What was typed, never what it resolved to.
            assert ("127.0.0.1" in caught.value.message) is (host == "127.0.0.1")
            assert "IMAP_BLOCK_PRIVATE_HOSTS" in caught.value.hint
    allowed = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=False)
    with allowed.app_context():
        connect(settings_for(mailbox, host="localhost")).logout()


@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.1.1", False), ("172.16.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("::ffff:93.184.216.34", True),
    # IPv6 transition forms lead to the IPv4 address inside them: NAT64, 6to4, IPv4-compatible, Teredo.
    ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False), ("64:ff9b:1::a9fe:a9fe", False),
    ("2002:7f00:1::1", False), ("2002:c0a8:101::1", False), ("::127.0.0.1", False), ("::10.0.0.1", False),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
    ("64:ff9b::5db8:d822", True), ("2002:5db8:d822::1", True),  # the same forms of 93.184.216.34
])
def test_public_address_check(address, public):
    assert is_public_address(address) is public


def test_password_never_logged_even_at_debug(mailbox, caplog):
    caplog.set_level(logging.DEBUG)
    connect(settings_for(mailbox)).logout()
    with pytest.raises(ImapConnectError):
        connect(settings_for(mailbox, password="Another-Wrong-99"))
    assert mailbox.password not in caplog.text
    assert "Another-Wrong-99" not in caplog.text
