"""What a hostile or broken IMAP server (a real listener on loopback) can and cannot do to the CRM.

* The stored password only ever goes to the server it was entered for: pointing an inbox elsewhere
  (host, port, security, username or CA file) needs the password typed again, in the form and the service.
"""
from __future__ import annotations

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
