"""Attachments listed without downloading the message: BODYSTRUCTURE read from the real Dovecot by the sync's
follow-up job, shown as a paperclip on the timeline, in the message page and the JSON of the command line, and
downloaded from the stored list without reading the whole message first."""
from __future__ import annotations

import imaplib
import json
import os
import re

import pytest
import sqlalchemy as sa

from host_app import hookimpl
from host_app.extensions import db
from host_app.models import Contact
from plugins.imap_inbox.models import ImapInbox
from plugins.mail import rendering
from plugins.mail.models import Message, MessageAttachment
from tests.support.attachment_samples import NESTED_ATTACHMENTS, nested_message
from tests.support.imap_helpers import connect_inbox, sync, sync_and_follow_up, sync_carla_and_a_stranger
from tests.support.mail_samples import CARLA, big_attachment_message, text_message

TEN_MB = 10 * 1024 * 1024


@pytest.fixture
def listed(app, mailbox, owner):
    """Three e-mails of Carla's (nested multiparts, an attachment named with folders, plain text) and a
    stranger's with a file, synced with the follow-up jobs on a real worker."""
    return sync_carla_and_a_stranger(
        app, mailbox, owner, (nested_message(), big_attachment_message(os.urandom(300_000)), text_message()),
        stranger_file=b"secret", follow_up=True)


def _listed(app, message_id: int) -> list[tuple]:
    with app.app_context():
        return [(a.section, a.filename, a.content_type, a.size, a.encoding) for a in db.session.scalars(
            sa.select(MessageAttachment).where(MessageAttachment.message_pk == message_id)
            .order_by(MessageAttachment.section))]


def test_bodystructure_lists_what_reading_the_whole_message_finds(app, listed):
    _, ids = listed
    rows = _listed(app, ids["nested1@customer.example"])
    assert [(s, n, t) for s, n, t, _, _ in rows] == NESTED_ATTACHMENTS
    # The same sections, names and types as the downloaded message gives; sizes estimated within 3%.
    whole = rendering.render(nested_message()).attachments
    assert [(a.section, a.filename, a.content_type) for a in whole] == NESTED_ATTACHMENTS
    for (_, _, _, size, _), attachment in zip(rows, whole, strict=True):
        assert abs(size - attachment.size) <= max(attachment.size * 0.03, 40)

    (scan, html) = _listed(app, ids["scans1@customer.example"])
    # RFC 2231 name with folders: only the file's own name, decoded.
    assert scan[:3] == ("2", "Übersicht 2024.bin", "application/octet-stream") and scan[4] == "base64"
    assert html[:3] == ("3", "invoice.html", "text/html")
    assert _listed(app, ids["text1@customer.example"]) == []  # text/plain: never asked about
    with app.app_context():
        inbox = db.session.get(ImapInbox, listed[0])
        assert inbox.attachments_listed_id == max(ids.values())


def test_a_ten_megabyte_attachment_is_listed_at_its_decoded_size(app, mailbox, owner):
    mailbox.append("INBOX", big_attachment_message(os.urandom(TEN_MB)))
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync_and_follow_up(app, inbox_id)["status"] == "ok"
    with app.app_context():
        message_id = db.session.scalar(sa.select(Message.id))
    ((section, name, _, size, encoding), _) = _listed(app, message_id)
    # Estimated from BODYSTRUCTURE's encoded size (base64: 57 bytes per 78-character line), nothing downloaded.
    assert (section, name, encoding) == ("2", "Übersicht 2024.bin", "base64")
    assert abs(size - TEN_MB) < TEN_MB * 0.01


def test_the_listing_is_a_follow_up_of_the_sync_and_runs_once(app, mailbox, owner):
    mailbox.append("INBOX", nested_message())
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"  # the sync alone stores no attachment
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MessageAttachment)) == 0
    assert sync_and_follow_up(app, inbox_id)["status"] == "ok"
    assert sync_and_follow_up(app, inbox_id)["status"] == "ok"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MessageAttachment)) == 3


def test_the_listing_reads_many_batches_with_the_next_fetch_already_sent(app, mailbox, owner, monkeypatch):
    """BODYSTRUCTURE is asked for batch after batch, the next one sent before the last is stored: every
    message that can carry files is listed once, whatever the batch it falls in, and text mail is never asked."""
    from plugins.imap_inbox import attachment_listing

    monkeypatch.setattr(attachment_listing, "BATCH", 2)
    commands = []
    original = imaplib.IMAP4._command

    def counted(self, name, *args):
        if name == "UID" and args and args[0] == "FETCH" and "BODYSTRUCTURE" in str(args[-1]):
            commands.append(args[1])
        return original(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "_command", counted)
    store_listed = attachment_listing.store_listed
    monkeypatch.setattr(attachment_listing, "store_listed",
                        lambda found: (commands.append(f"store {len(found)}"), store_listed(found))[1])
    for _ in range(3):
        mailbox.append("INBOX", nested_message())
        mailbox.append("INBOX", text_message())
    mailbox.append("INBOX", big_attachment_message(b"x" * 5000))
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)
    with app.app_context():
        upto = db.session.scalar(sa.select(sa.func.max(Message.id)))
        result = attachment_listing.list_attachments(inbox_id, summary["sync_run_id"], upto)
        listed = dict(db.session.execute(
            sa.select(Message.uid, sa.func.count(MessageAttachment.section))
            .join(MessageAttachment, MessageAttachment.message_pk == Message.id).group_by(Message.uid)).all())
    # Text mail (UIDs 2, 4, 6) is never asked about; the second FETCH goes out before the first batch is stored.
    assert result["messages"] == 4 and commands == ["1,3", "5,7", "store 2", "store 2"]
    assert listed == {1: len(NESTED_ATTACHMENTS), 3: len(NESTED_ATTACHMENTS), 5: len(NESTED_ATTACHMENTS), 7: 2}


def test_the_timeline_shows_a_paperclip_and_the_json_lists_attachments(app, listed, agent_client, runner):
    _, ids = listed
    with app.app_context():
        contact_id = db.session.scalar(sa.select(Contact.id).where(Contact.email == CARLA))
    page = agent_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert page.count('aria-label="3 attachments"') == 1 and page.count('aria-label="2 attachments"') == 1
    assert "Carla Customer" in page and "Olivia Owner" in page  # who wrote it, and whose inbox holds it

    result = runner.invoke(args=["contacts", "timeline", CARLA, "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["message_id"]: row for row in json.loads(result.output)}
    nested = rows["nested1@customer.example"]
    assert nested["from"] == CARLA and nested["to"] == ["team@team.example"] and nested["cc"] == ["dan@partner.example"]
    assert nested["thread_id"] and nested["direction"] == "in"
    assert [(a["name"], a["type"]) for a in nested["attachments"]] == [(n, t) for _, n, t in NESTED_ATTACHMENTS]
    assert all(isinstance(a["size"], int) and a["size"] > 0 for a in nested["attachments"])
    assert rows["text1@customer.example"]["attachments"] == []


def test_the_message_page_lists_attachments_when_the_server_cannot_be_read(app, listed, agent_client):
    """The list comes from the database: with the server unreachable the page still names every file."""
    _, ids = listed
    with app.app_context():
        inbox = db.session.get(ImapInbox, listed[0])
        inbox.port = 1  # nothing listens there
        db.session.commit()
    page = agent_client.get(f"/mail/messages/{ids['nested1@customer.example']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "The mail server could not be reached" in html
    assert "Attachments (3)" in html
    for section, name, _ in NESTED_ATTACHMENTS:
        assert f'/attachments/{section}"' in html and name in html


class _SourceReads:
    """Counts the mail core's asks for a whole message (it answers nothing: the transport still does)."""

    def __init__(self):
        self.calls = 0

    @hookimpl(tryfirst=True)
    def fetch_message_source(self, message):
        self.calls += 1


def test_a_listed_attachment_downloads_without_reading_the_whole_message(app, listed, agent_client):
    _, ids = listed
    message_id = ids["nested1@customer.example"]
    reads = _SourceReads()
    app.extensions["plugins"].pm.register(reads, name="source-reads")
    try:
        response = agent_client.get(f"/mail/messages/{message_id}/attachments/3")
        assert response.status_code == 200
        assert response.headers["Content-Disposition"].startswith('attachment; filename="passwd.txt"')
        assert response.get_data() == b"eine Notiz\r\n"  # as the mail carried it
        assert reads.calls == 0  # only the part was read from the server
        assert agent_client.get(f"/mail/messages/{message_id}").status_code == 200
        assert reads.calls == 1  # opening the e-mail reads it (its text), as before
    finally:
        app.extensions["plugins"].pm.unregister(name="source-reads")


def test_a_message_deleted_on_the_server_after_sync_says_so_and_keeps_its_list(app, listed, agent_client, mailbox,
                                                                                runner):
    _, ids = listed
    client = mailbox.client()
    client.select_folder("INBOX")
    client.delete_messages(client.search(["HEADER", "Message-ID", "nested1@customer.example"]))
    client.expunge()
    client.logout()
    message_id = ids["nested1@customer.example"]
    html = agent_client.get(f"/mail/messages/{message_id}").get_data(as_text=True)
    assert "no longer in the mailbox on the server" in html and "Attachments (3)" in html
    download = agent_client.get(f"/mail/messages/{message_id}/attachments/2")
    assert download.status_code == 404
    assert "no longer in the mailbox on the server" in download.get_data(as_text=True)
    shown = json.loads(runner.invoke(args=["messages", "show", str(message_id), "--json"]).output)
    assert "deleted there after it was synced" in shown["problem"] and shown["text"] is None
    assert [(a["section"], a["name"], a["type"]) for a in shown["attachments"]] == NESTED_ATTACHMENTS


def test_attachment_urls_guessed_for_mail_off_every_timeline_are_not_found(app, listed, agent_client, admin_client):
    _, ids = listed
    stranger = ids["stranger1@elsewhere.example"]
    assert _listed(app, stranger)  # listed, yet nobody reaches it through a timeline
    for client in (agent_client, admin_client):
        assert client.get(f"/mail/messages/{stranger}").status_code == 404
        assert client.get(f"/mail/messages/{stranger}/attachments/2").status_code == 404
    assert agent_client.get("/mail/messages/999999/attachments/2").status_code == 404


def test_agents_see_the_same_timeline_as_admins_but_no_inbox_name(app, listed, agent_client, admin_client):
    _, ids = listed
    with app.app_context():
        contact_id = db.session.scalar(sa.select(Contact.id).where(Contact.email == CARLA))

    def titles(client):
        page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
        return re.findall(r'<a href="/mail/messages/\d+">([^<]+)</a>', page), page

    as_agent, agent_page = titles(agent_client)
    as_admin, _ = titles(admin_client)
    assert as_agent == as_admin == ["Quarterly figures", "Scans", "Plain order"]
    assert "Secret Sales Desk" not in agent_page
    message_page = agent_client.get(f"/mail/messages/{ids['scans1@customer.example']}").get_data(as_text=True)
    assert "Secret Sales Desk" not in message_page
    assert admin_client.get(f"/mail/messages/{ids['scans1@customer.example']}").get_data(as_text=True).count(
        "Secret Sales Desk") == 1
