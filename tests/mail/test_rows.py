"""The mail core's rows of one message, whatever transport read it (plugins/mail/rows.py): pure logic."""
from __future__ import annotations

import datetime as dt

from plugins.mail.models import ROLE_INBOX, ROLE_SENT
from plugins.mail.rows import RowContext, message_row

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
RECEIVED = dt.datetime(2025, 2, 28, 9, 30, tzinfo=dt.UTC)
TEAM = "team@ourco.example"


def context(role: str = ROLE_INBOX) -> RowContext:
    return RowContext(inbox_id=7, folder_id=9, folder_role=role, own_addresses=frozenset({TEAM}), now=NOW)


def header(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


MAIL = header("From: Ann <ann@client.example>", f"To: {TEAM}", "Bcc: hidden@client.example",
              "Subject: Hello", "Date: Fri, 28 Feb 2025 10:00:00 +0100", "Message-ID: <m1@client.example>")


def test_an_incoming_message_and_its_addresses():
    row, addresses = message_row(context(), 42, MAIL, RECEIVED, 1234, "\\Seen")
    assert (row["inbox_id"], row["folder_id"], row["uid"], row["size"], row["flags"]) == (7, 9, 42, 1234, "\\Seen")
    assert (row["direction"], row["from_email"], row["from_name"], row["subject"]) == ("in", "ann@client.example",
                                                                                      "Ann", "Hello")
    assert row["date"] == dt.datetime(2025, 2, 28, 9, 0, tzinfo=dt.UTC)
    assert row["internal_date"] == RECEIVED and row["created_at"] == NOW
    assert row["message_id"] == row["dedup_key"] == "m1@client.example"
    assert row["parse_error"] is None and row["preview"] is None and row["automated"] is False
    # Incoming Bcc is not kept (RECIPIENT_ROLES in plugins/mail/models.py says why).
    assert [(a["role"], a["email"]) for a in addresses] == [("from", "ann@client.example"), ("to", TEAM)]
    assert all(a["inbox_id"] == 7 and a["date"] == row["date"] for a in addresses)


def test_our_own_mail_is_outgoing_and_keeps_its_bcc():
    ours = header(f"From: {TEAM}", "To: ann@client.example", "Bcc: boss@ourco.example", "Subject: Offer")
    for role, sender in ((ROLE_SENT, ours), (ROLE_INBOX, ours)):  # in Sent, or from one of our addresses
        row, addresses = message_row(context(role), 1, sender, RECEIVED, 10, "")
        assert row["direction"] == "out"
        assert ("bcc", "boss@ourco.example") in [(a["role"], a["email"]) for a in addresses]


def test_previews_come_from_the_server_or_from_the_start_of_the_body():
    row, _ = message_row(context(), 1, MAIL, RECEIVED, 10, "", preview="  Hi   Ann,\r\nthanks  ")
    assert row["preview"] == "Hi Ann, thanks"
    row, _ = message_row(context(), 1, MAIL, RECEIVED, 10, "", body_start=b"Hello from the body\r\n")
    assert row["preview"] == "Hello from the body"


def test_a_message_the_server_would_not_give_is_stored_with_what_is_known():
    row, addresses = message_row(context(), 5, b"", None, 0, "", complete=False)
    assert row["parse_error"].startswith("the server could not give this message's headers")
    assert row["date"] == NOW  # no Date header and no received date: when it was stored
    assert row["dedup_key"].startswith("sha1:") and addresses == []


def test_automated_mail_is_flagged():
    row, _ = message_row(context(), 1, header("From: noreply@shop.example", "Subject: Your order"), RECEIVED, 1, "")
    assert row["automated"] is True
