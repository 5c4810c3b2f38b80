"""Opening an e-mail from a timeline: its source read from the real Dovecot (BODY.PEEK), sanitized HTML in a
sandboxed frame, plain text with links, broken charsets, attachments listed, deleted-on-server said plainly,
and who may open what."""
from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from host_app.extensions import db
from host_app.models import Contact
from plugins.mail.models import Message
from tests.support.imap_helpers import sync_carla_and_a_stranger
from tests.support.mail_samples import CARLA, broken_charset_message, html_message, text_message


@pytest.fixture
def synced(app, mailbox, owner):
    return sync_carla_and_a_stranger(app, mailbox, owner, (html_message(), text_message(), broken_charset_message()))


def test_hook_fetch_message_source(app, synced, mailbox):
    """The transport answers the mail core's hook with the source as appended, without marking it seen."""
    _, ids = synced
    with app.app_context():
        message = db.session.get(Message, ids["text1@customer.example"])
        raw = app.extensions["plugins"].hook.fetch_message_source(app=app, message=message)
    assert raw.replace(b"\r\n", b"\n") == text_message().replace(b"\r\n", b"\n")
    client = mailbox.client()
    client.select_folder("INBOX", readonly=True)
    flags = client.fetch(client.search(["HEADER", "Message-ID", "text1@customer.example"]), ["FLAGS"])
    client.logout()
    assert all(b"\\Seen" not in f[b"FLAGS"] for f in flags.values())


def test_the_timeline_links_each_email_to_its_page(app, synced, agent_client):
    _, ids = synced
    with app.app_context():
        contact_id = db.session.scalar(sa.select(Contact.id).where(Contact.email == CARLA))
    page = agent_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert f'href="/mail/messages/{ids["html1@customer.example"]}"' in page
    assert f'href="/mail/messages/{ids["text1@customer.example"]}"' in page


def test_an_html_email_opens_sanitized_in_a_sandboxed_frame(synced, agent_client):
    _, ids = synced
    message_id = ids["html1@customer.example"]
    page = agent_client.get(f"/mail/messages/{message_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Invoice 4711" in html and "Carla Customer &lt;carla@customer.example&gt;" in html
    assert "Dan Partner &lt;dan@partner.example&gt;" in html and "Team &lt;team@team.example&gt;" in html
    assert '<time class="local-time" datetime="2024-05-01T14:30:00+00:00">' in html
    assert "Show images" in html
    frame = re.search(r'<iframe[^>]*sandbox="allow-popups allow-popups-to-escape-sandbox"[^>]*src="([^"]+)"',
                      html, re.S)
    assert frame and frame.group(1) == f"/mail/messages/{message_id}/body"
    assert "Rechnung für März.pdf" in html and "application/pdf" in html and "../" not in html

    body = agent_client.get(frame.group(1))
    csp = body.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src data:;" in csp and "sandbox" in csp
    assert "script-src" not in csp  # default-src 'none' forbids scripts
    content = body.get_data(as_text=True)
    assert "invoice 4711" in content
    for hostile in ("<script", "pwned", "onclick", "onerror", "tracker.example", "javascript:", "<iframe", "<form",
                    "evil.example", "<style>body { background"):
        assert hostile not in content, hostile
    assert 'src="data:image/gif;base64,' in content  # the cid: image, from the message itself
    assert 'href="https://customer.example/orders/4711"' in content and 'rel="noopener noreferrer"' in content

    shown = agent_client.get(f"/mail/messages/{message_id}/body?images=1")
    assert "https://tracker.example/open.gif?u=1" in shown.get_data(as_text=True)
    assert "img-src data: https: http:" in shown.headers["Content-Security-Policy"]


def test_plain_text_keeps_its_lines_and_links(synced, agent_client):
    _, ids = synced
    html = agent_client.get(f"/mail/messages/{ids['text1@customer.example']}").get_data(as_text=True)
    assert '<div class="mail-text">Hello,\n\nsee <a href="https://customer.example/track?id=9"' in html
    assert 'rel="noopener noreferrer"' in html and "<iframe" not in html


def test_a_broken_charset_and_unclosed_mime_show_readable_text(synced, agent_client):
    _, ids = synced
    page = agent_client.get(f"/mail/messages/{ids['broken1@customer.example']}")
    assert page.status_code == 200
    assert "Grüße aus München, Bestellung 99" in page.get_data(as_text=True)


def test_the_inbox_name_is_for_admins_only(synced, agent_client, admin_client, mailbox):
    _, ids = synced
    url = f"/mail/messages/{ids['text1@customer.example']}"
    as_agent = agent_client.get(url).get_data(as_text=True)
    as_admin = admin_client.get(url).get_data(as_text=True)
    # The inbox's address and whose it is for everyone who may read the message; its name for admins only.
    assert mailbox.username in as_agent and "Secret Sales Desk" not in as_agent
    assert "Olivia Owner&#39;s inbox" in as_agent
    assert mailbox.username in as_admin and "Secret Sales Desk" in as_admin


def test_mail_off_every_timeline_is_not_found(synced, agent_client):
    _, ids = synced
    stranger = ids["stranger1@elsewhere.example"]
    assert agent_client.get(f"/mail/messages/{stranger}").status_code == 404
    assert agent_client.get(f"/mail/messages/{stranger}/body").status_code == 404
    assert agent_client.get("/mail/messages/999999").status_code == 404


def test_an_email_deleted_on_the_server_says_so(app, synced, agent_client, mailbox):
    _, ids = synced
    client = mailbox.client()
    client.select_folder("INBOX")
    client.delete_messages(client.search(["HEADER", "Message-ID", "text1@customer.example"]))
    client.expunge()
    client.logout()
    page = agent_client.get(f"/mail/messages/{ids['text1@customer.example']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "no longer in the mailbox on the server" in html
    assert "Plain order" in html  # what was stored still shows


def test_messages_show_prints_headers_text_and_attachments(app, synced, runner, mailbox):
    _, ids = synced
    result = runner.invoke(args=["messages", "show", str(ids["html1@customer.example"]), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["subject"] == "Invoice 4711" and shown["from"] == {"email": CARLA, "name": "Carla Customer"}
    assert shown["to"] == [{"email": "team@team.example", "name": "Team"}]
    assert shown["cc"] == [{"email": "dan@partner.example", "name": "Dan Partner"}]
    assert shown["text"] == "Dear team, the invoice 4711 is attached.\n"
    assert shown["attachments"] == [{"name": "Rechnung für März.pdf", "type": "application/pdf", "size": 3009,
                                     "section": "2"}]
    assert shown["inbox"]["email"] == mailbox.username and shown["problem"] is None
    missing = runner.invoke(args=["messages", "show", "999999", "--json"])
    assert missing.exit_code != 0 and "no stored e-mail with id 999999" in missing.output
