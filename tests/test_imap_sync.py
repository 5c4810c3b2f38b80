"""The sync engine against a real Dovecot: initial, incremental, expunge, UIDVALIDITY, read-only, resume."""
from __future__ import annotations

import pytest

from host_app.testing import make_agent
from tests.imap_helpers import OWNER_EMAIL, OWNER_NAME, addresses, connect_inbox, message, stored, sync


@pytest.fixture
def owner(app) -> int:
    return make_agent(app, OWNER_EMAIL, "owner-password-1", name=OWNER_NAME)


def test_initial_sync_stores_inbox_and_sent(app, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 6)])
    mailbox.write("Sent", [message(n, sender=mailbox.username, to="Carla <carla@customer.example>",
                                   message_id=f"<sent{n}@team.example>") for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok", summary
    assert summary["new_messages"] == 8
    rows = stored(app, inbox_id)
    assert [r["folder"] for r in rows].count("INBOX") == 5
    assert {r["direction"] for r in rows if r["folder"] == "Sent"} == {"out"}
    assert {r["direction"] for r in rows if r["folder"] == "INBOX"} == {"in"}
    assert len(addresses(app, inbox_id)) == 16
