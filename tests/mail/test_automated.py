"""The one "automated mail" rule (plugins/mail/automated.py): pure logic, no database."""
from __future__ import annotations

import pytest

from plugins.mail.automated import is_automated, is_machine_address, sent_by_machine
from plugins.mail.headers import parse_headers

PERSON = "bob@client.example"


@pytest.mark.parametrize("address", [
    "noreply@shop.example", "no-reply@x.example", "no_reply@x.example", "no.reply@x.example",
    "no-reply-aws@x.example", "donotreply@x.example", "do-not-reply@bank.example", "dont-reply@x.example",
    "mailer-daemon@mx.example", "MAILER-DAEMON@mx.example.com", "mailerdaemon@x.example", "postmaster@x.example",
    "bounce@x.example", "bounces@x.example", "bounces+12345-abc@sendgrid.example", "bounce-mc.us5@x.example",
    "notifications@tracker.example", "notification@x.example", "NoReply@Shop.Example",
])
def test_machine_addresses(address):
    assert is_machine_address(address)


@pytest.mark.parametrize("address", [
    "nora@x.example", "noreplyjohn@x.example", "bouncer@x.example", "notify@x.example", "info@x.example",
    "support@x.example", "john.noreply@x.example", "postmasters-guild@x.example", "", None,
])
def test_people_are_not_machine_addresses(address):
    assert not is_machine_address(address)


MACHINE_SENT = [
    {"auto_submitted": "auto-replied"},
    {"auto_submitted": "auto-generated"},
    {"auto_submitted": " Auto-Replied "},
    {"x_autoreply": True},
    {"precedence": "bulk"},
    {"precedence": "junk"},
    {"precedence": "auto_reply"},
    {"precedence": " BULK"},
    {"content_type": "multipart/report"},
    {"content_type": "multipart/report; report-type=delivery-status"},
    {"from_email": "MAILER-DAEMON@mx.client.example"},
    {"from_email": "noreply@shop.example"},
    {"from_email": "bounces+123@esp.example"},
    {"from_email": "notifications@tracker.example"},
]
PERSONAL = [
    {},
    {"auto_submitted": "no"},
    {"auto_submitted": ""},
    {"precedence": "normal"},
    {"x_autoreply": False},
    {"content_type": "text/plain"},
    {"content_type": "multipart/mixed"},
]
# A person writing to (or answering through) a mailing list: automated mail, but a person's answer.
LIST_MAIL = [
    {"precedence": "list"},
    {"list_id": "dev.lists.example"},
    {"list_unsubscribe": True},
]


def _headers(**values):
    return {"auto_submitted": None, "precedence": None, "x_autoreply": False, "content_type": "text/plain",
            "from_email": PERSON, **values}


@pytest.mark.parametrize("values", MACHINE_SENT)
def test_machine_sent_mail_is_sent_by_a_machine_and_automated(values):
    headers = _headers(**values)
    assert sent_by_machine(**headers) is True
    assert is_automated(**headers, list_id=None, list_unsubscribe=False) is True


@pytest.mark.parametrize("values", PERSONAL)
def test_personal_mail_is_neither(values):
    headers = _headers(**values)
    assert sent_by_machine(**headers) is False
    assert is_automated(**headers, list_id=None, list_unsubscribe=False) is False


@pytest.mark.parametrize("values", LIST_MAIL)
def test_list_mail_is_automated_but_not_sent_by_a_machine(values):
    list_values = {"list_id": values.pop("list_id", None), "list_unsubscribe": values.pop("list_unsubscribe", False)}
    headers = _headers(**values)
    assert sent_by_machine(**headers) is False
    assert is_automated(**headers, **list_values) is True


@pytest.mark.parametrize("lines", [
    ["From: p@example.com", "Auto-Submitted: auto-generated (vacation)"],
    ["From: p@example.com", "Precedence: list"],
    ["From: p@example.com", "List-Id: <dev.lists.example.org>"],
    ["From: bounces+1@esp.example"],
    ["From: p@example.com", "X-Autoreply: no", "Precedence: normal"],
    ["From: Person <p@example.com>", "Content-Type: text/plain"],
])
def test_the_stored_flag_is_the_rule_over_the_stored_values(lines):
    parsed = parse_headers(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert parsed.automated is is_automated(parsed.auto_submitted, parsed.precedence, parsed.x_autoreply,
                                            parsed.content_type, parsed.from_email, parsed.list_id,
                                            parsed.list_unsubscribe)
