"""Attachments: listed with decoded names and sizes, downloaded from the real Dovecot in slices, always as a
download with a safe name, within the configured size limit."""
from __future__ import annotations

import hashlib
import os
import re

import sqlalchemy as sa

from host_app.extensions import db
from host_app.models import Contact
from plugins.imap_inbox import message_source
from plugins.mail.models import Message
from tests.support.imap_helpers import connect_inbox, sync
from tests.support.mail_samples import CARLA, big_attachment_message

TEN_MB = 10 * 1024 * 1024


def _synced_message(app, mailbox, owner, raw: bytes) -> int:
    mailbox.append("INBOX", raw)
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    with app.app_context():
        db.session.add(Contact(email=CARLA, name="Carla Customer"))
        db.session.commit()
        return db.session.scalar(sa.select(Message.id).where(Message.message_id == "scans1@customer.example"))


def test_hook_open_message_part(app, mailbox, owner):
    """The transport hands a part over in slices of PART_SLICE_BYTES, still base64: never the whole file."""
    payload = os.urandom(3 * 1024 * 1024)
    message_id = _synced_message(app, mailbox, owner, big_attachment_message(payload))
    with app.app_context():
        message = db.session.get(Message, message_id)
        chunks = app.extensions["plugins"].hook.open_message_part(app=app, message=message, section="2")
        sizes = [len(chunk) for chunk in chunks]
    assert len(sizes) >= 4 and max(sizes) == message_source.PART_SLICE_BYTES
    assert sum(sizes) > len(payload) * 4 // 3  # base64 with line breaks


def test_a_ten_megabyte_attachment_downloads_whole_under_a_safe_name(app, mailbox, owner, agent_client):
    payload = os.urandom(TEN_MB)
    message_id = _synced_message(app, mailbox, owner, big_attachment_message(payload))
    page = agent_client.get(f"/mail/messages/{message_id}").get_data(as_text=True)
    assert "Übersicht 2024.bin" in page and "10.5 MB" in page and "Scan/" not in page
    link = re.search(r'href="(/mail/messages/\d+/attachments/2)"', page)
    assert link

    response = agent_client.get(link.group(1), buffered=False)
    assert response.status_code == 200
    assert response.is_streamed
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"Ubersicht 2024.bin\"; filename*=UTF-8''%C3%9Cbersicht%202024.bin")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    digest, size = hashlib.sha256(), 0
    for chunk in response.response:
        assert len(chunk) <= message_source.PART_SLICE_BYTES  # decoded slice by slice, never the whole file
        digest.update(chunk)
        size += len(chunk)
    response.close()
    assert size == TEN_MB and digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_an_html_attachment_downloads_instead_of_running(app, mailbox, owner, agent_client):
    message_id = _synced_message(app, mailbox, owner, big_attachment_message(b"small"))
    response = agent_client.get(f"/mail/messages/{message_id}/attachments/3")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="invoice.html"')
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.get_data() == b"<script>alert(1)</script>\r\n"  # as the mail carried it


def test_attachments_over_the_limit_and_unlisted_parts_are_refused(app, mailbox, owner, agent_client):
    message_id = _synced_message(app, mailbox, owner, big_attachment_message(os.urandom(200_000)))
    app.config["MAIL_ATTACHMENT_MAX_BYTES"] = 100_000
    refused = agent_client.get(f"/mail/messages/{message_id}/attachments/2")
    assert refused.status_code == 413
    assert "larger (200,000 bytes) than the 100,000 bytes" in refused.get_data(as_text=True)
    # Section 1 is the text, not an attachment; nonsense is no section at all.
    assert agent_client.get(f"/mail/messages/{message_id}/attachments/1").status_code == 404
    assert agent_client.get(f"/mail/messages/{message_id}/attachments/..%2F1").status_code == 404
