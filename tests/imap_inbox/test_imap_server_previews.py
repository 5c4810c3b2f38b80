"""Servers whose PREVIEW gives nothing, and servers that list FETCH items in their own order.

Cyrus IMAP 3.6 advertises PREVIEW and answers ``PREVIEW NIL`` for every
message, FLAGS before UID. No Dovecot setting does that, so these tests run
against tests/support/cyrus_like.py, a loopback TLS server scripted for exactly
that; the rest of the sync's behaviour is tested against Dovecot.
"""
from __future__ import annotations

import datetime as dt
import types

from plugins.imap_inbox import fetch
from plugins.imap_inbox.testing import mailgen
from tests.support.cyrus_like import PASSWORD, USERNAME, CyrusLikeServer
from tests.support.imap_helpers import connect_inbox, stored, sync


def _message(n: int, body: str, **kwargs) -> bytes:
    return mailgen.make_message("Carla Customer <carla@customer.example>", USERNAME, f"Order {n}",
                                date=dt.datetime(2024, 2, 1, 9, n, tzinfo=dt.UTC),
                                message_id=f"<c{n}@customer.example>", body=body, **kwargs)


def _connect(app, server, dovecot, owner) -> int:
    account = types.SimpleNamespace(host=server.host, port=server.port, ca_file=dovecot.ca_file,
                                    username=USERNAME, password=PASSWORD)
    return connect_inbox(app, account, owner)


def test_preview_nil_falls_back_to_the_body_text_in_one_fetch_per_batch(app, dovecot, owner):
    messages = [_message(n, f"Your order number {1000 + n} has shipped.\n\nBest,\nCarla\n") for n in range(1, 8)]
    messages.append(_message(8, "Grüße aus München, die Rechnung kommt morgen.\n"))
    with CyrusLikeServer(dovecot.cert_file, dovecot.key_file, {"INBOX": messages, "Sent": []}) as server:
        inbox_id = _connect(app, server, dovecot, owner)
        app.config["IMAP_FETCH_BATCH"] = 3
        summary = sync(app, inbox_id)
        fetches = server.fetch_commands()

    assert summary["status"] == "ok", summary
    rows = {row["message_id"]: row for row in stored(app, inbox_id)}
    assert len(rows) == 8
    for n in range(1, 8):
        assert rows[f"c{n}@customer.example"]["preview"] == f"Your order number {1000 + n} has shipped. Best, Carla"
    assert rows["c8@customer.example"]["preview"] == "Grüße aus München, die Rechnung kommt morgen."
    # Three batches: the first asks for PREVIEW, gets NIL for all, and reads the body starts of that batch in
    # one more FETCH; the next two batches ask for the body start straight away. Never one FETCH per message.
    assert len(fetches) == 4, fetches
    assert "PREVIEW" in fetches[0] and "BODY.PEEK[TEXT]" not in fetches[0]
    assert fetches[1].startswith("UID FETCH 8:6 ") or fetches[1].startswith("UID FETCH 6:8 ")
    assert "BODY.PEEK[TEXT]<0.2048>" in fetches[1] and "HEADER" not in fetches[1]
    assert all("PREVIEW" not in f and "BODY.PEEK[TEXT]<0.2048>" in f for f in fetches[2:])


def test_an_answer_in_the_servers_own_item_order_is_read_with_one_match():
    cyrus = b'3 FETCH (FLAGS (\\Seen $Label1) UID 42 INTERNALDATE "01-Feb-2024 10:00:00 +0100" RFC822.SIZE 1234 ' \
            b'BODY[HEADER.FIELDS (FROM)] {10}'
    items = fetch._match_items(cyrus)
    assert items == (b"42", b"\\Seen $Label1", b"01-Feb-2024 10:00:00 +0100", b"1234")
    # The order is learned once: the next answer in it is one match of that order's regex.
    assert any(pattern.match(cyrus) for pattern, _ in fetch._learned_orders)
    parsed = fetch.parse_groups([([cyrus, b")"], {"header": b"From: a@b.example\r\n\r\n"})])
    message = parsed[42]
    assert (message.flags, message.size) == ("$Label1 \\Seen", 1234)
    assert message.received_at() == dt.datetime(2024, 2, 1, 9, 0, tzinfo=dt.UTC)
    assert message.header.startswith(b"From:")
    # An answer missing an item (a message the server cannot read) is still read item by item.
    partial = fetch.parse_groups([([b"4 FETCH (FLAGS () UID 43)"], {})])
    assert partial[43].complete is False and partial[43].size == 0


def test_an_empty_server_preview_uses_the_body_start_when_there_is_one():
    from plugins.mail.rows import RowContext, message_row

    context = RowContext(inbox_id=1, folder_id=1, folder_role="inbox", own_addresses=frozenset(),
                         now=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    header = b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    for preview in (None, "", "   "):
        row, _ = message_row(context, 1, header, None, 10, "", preview=preview, body_start=b"The order 1234 shipped.")
        assert row["preview"] == "The order 1234 shipped."
    row, _ = message_row(context, 1, header, None, 10, "", preview="From the server")
    assert row["preview"] == "From the server"
