"""Searching stored e-mails: mail synced from a real Dovecot, found by the database's own full-text index
(PostgreSQL tsvector + GIN, SQLite FTS5), ranked, highlighted safely, only where a timeline reaches."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from host_app import create_app, migrating
from host_app.api import Contact, db
from host_app.testing import AGENT_PASSWORD, _all_plugins_config, log_in
from plugins.imap_inbox.testing import mailgen
from plugins.mail import search, store
from plugins.mail.testing import MailRows
from tests.support.imap_helpers import connect_inbox, sync

CARLA = ("Carla Customer", "carla@customer.example")
DAN = ("Dan Buyer", "dan@buyer.example")
STRANGER = ("Sam Stranger", "sam@stranger.example")  # writes to the team, but is nobody's contact


def _mail(n, sender, subject, body, to=None):
    return mailgen.make_message(sender, [to or "team@team.example"], subject, body=body,
                                date=dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC) + dt.timedelta(hours=n),
                                message_id=f"<s{n}@search.example>")


@pytest.fixture
def synced(app, mailbox, owner):
    """A Dovecot mailbox synced once; Carla and Dan are contacts, Sam is not."""
    mailbox.write("INBOX", [
        _mail(1, CARLA, "Invoice 4711 for the March order", "Please find the invoice attached. Regards"),
        _mail(2, CARLA, "Lunch next week?", "We could also talk about the invoices then."),
        _mail(3, DAN, "Quote request", "Could you send an invoice for the blue pallets and the red ones"),
        _mail(4, STRANGER, "Invoice from a stranger", "Pay the invoice at once."),
        _mail(5, CARLA, "<script>alert('x')</script> invoice", "<img src=x onerror=alert(1)> the invoice"),
    ])
    mailbox.write("Sent", [
        mailgen.make_message(mailbox.username, [CARLA], "Re: Invoice 4711 for the March order",
                             body="Thanks, the pallets arrive Tuesday.", message_id="<out1@team.example>",
                             date=dt.datetime(2024, 3, 2, tzinfo=dt.UTC)),
    ])
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["new_messages"] == 6
    with app.app_context():
        for name, email in (CARLA, DAN):
            db.session.add(Contact(email=email, name=name))
        db.session.commit()
        contacts = {email: contact_id for contact_id, email in db.session.execute(sa.select(Contact.id, Contact.email))}
    return {"inbox_id": inbox_id, "contacts": contacts}


def _subjects(hits):
    return [search.plain(hit.subject) for hit in hits]


def test_ranked_stemmed_all_words_and_only_reachable_mail(app, synced):
    with app.app_context():
        hits = search.search_messages("invoice")
        subjects = _subjects(hits)
        # The subject outweighs the text; the stranger's e-mail is on no timeline, so nobody finds it.
        assert set(subjects) == {"Invoice 4711 for the March order", "Re: Invoice 4711 for the March order",
                                 "<script>alert('x')</script> invoice", "Lunch next week?", "Quote request"}
        assert set(subjects[:3]) == {"Invoice 4711 for the March order", "Re: Invoice 4711 for the March order",
                                     "<script>alert('x')</script> invoice"}
        assert "Invoice from a stranger" not in subjects
        assert [h.rank for h in hits] == sorted((h.rank for h in hits), reverse=True)
        # Stemming: "invoices" in the text is found by "invoice" (above), "invoices" finds "invoice" too.
        assert "Quote request" in _subjects(search.search_messages("INVOICES"))
        # Every word must match, in any order; punctuation and operators are only separators.
        assert _subjects(search.search_messages('pallets "blue" OR -invoice')) == ["Quote request"]
        assert search.search_messages("pallets nonexistentword") == []
        assert search.search_messages("  ''  ") == []
        # The sent reply is on Carla's timeline (sent to her) and found by its text.
        assert _subjects(search.search_messages("Tuesday")) == ["Re: Invoice 4711 for the March order"]


def test_matches_are_marked_and_hostile_text_stays_text(app, synced):
    with app.app_context():
        hit = next(h for h in search.search_messages("invoice") if "script" in h.subject)
        assert str(hit.subject) == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; <mark>invoice</mark>"
        assert "<img" not in str(hit.excerpt) and "&lt;img src=x onerror=alert(1)&gt;" in str(hit.excerpt)
        assert "<mark>invoice</mark>" in str(hit.excerpt)
        order = next(h for h in search.search_messages("invoices order") if h.subject.startswith("<mark>"))
        assert str(order.subject) == "<mark>Invoice</mark> 4711 for the March <mark>order</mark>"


def test_one_contacts_mail_or_everyones(app, synced):
    with app.app_context():
        dan = db.session.get(Contact, synced["contacts"]["dan@buyer.example"])
        carla = db.session.get(Contact, synced["contacts"]["carla@customer.example"])
        assert _subjects(search.search_messages("invoice", contact=dan)) == ["Quote request"]
        carlas = _subjects(search.search_messages("invoice", contact=carla))
        assert "Quote request" not in carlas and "Lunch next week?" in carlas and len(carlas) == 4
        hit = search.search_messages("pallets blue")[0]
        assert [c.email for c in hit.contacts] == ["dan@buyer.example"]


def test_search_page_contact_page_and_contacts_list(app, synced, agent):
    client = log_in(app.test_client(), "agent@team.example", AGENT_PASSWORD)
    page = client.get("/mail/search?q=invoice")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; <mark>invoice</mark>" in html
    assert "<script>alert" not in html and "stranger" not in html.lower()
    assert "Sales desk" not in html  # the inbox's name is for admins; the owner's name is shown
    assert "Olivia Owner" in html

    dan_id = synced["contacts"]["dan@buyer.example"]
    scoped = client.get(f"/mail/search?q=invoice&contact={dan_id}").get_data(as_text=True)
    assert "Quote request" in scoped and "Lunch next week?" not in scoped
    assert client.get("/mail/search?q=invoice&contact=99999").status_code == 404
    assert client.get("/mail/search?q=invoice&contact=abc").status_code == 404
    assert "Type a word" in client.get("/mail/search?q=%21%21").get_data(as_text=True)

    detail = client.get(f"/contacts/{dan_id}").get_data(as_text=True)
    assert f'name="contact" value="{dan_id}"' in detail and "/mail/search" in detail

    # The contacts list finds Dan by a word only his e-mail has; nobody by the stranger's.
    listed = client.get("/contacts/?q=pallets").get_data(as_text=True)
    assert "dan@buyer.example" in listed and "carla@customer.example" in listed  # our reply to Carla too
    listed = client.get("/contacts/?q=blue").get_data(as_text=True)
    assert "dan@buyer.example" in listed and "carla@customer.example" not in listed
    assert "No contacts match" in client.get("/contacts/?q=stranger+pay").get_data(as_text=True)


def test_cli_messages_search(app, synced):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["messages", "search", "invoices", "blue", "--json"])
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.output)
    assert found["subject"] == "Quote request" and "<mark>invoice</mark>" in found["excerpt_html"]
    assert found["contacts"][0]["email"] == "dan@buyer.example" and found["direction"] == "in"

    result = runner.invoke(args=["messages", "search", "invoice", "--contact", "Dan@Buyer.example"])
    assert result.exit_code == 0 and re.search(r"\treceived\tQuote request$", result.output, re.M)
    result = runner.invoke(args=["messages", "search", "invoice", "--contact", "nobody@x.example"])
    assert result.exit_code != 0 and "no contact with the e-mail address nobody@x.example" in result.output
    result = runner.invoke(args=["messages", "search", "--", "--"])
    assert result.exit_code != 0 and "at least one word" in result.output


def test_the_index_follows_deletes_and_changes(app, admin):
    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example", owner_id=admin)
        db.session.add(Contact(email="carla@customer.example"))
        db.session.commit()
        first = rows.received(box, CARLA, subject="Shipment of crates", preview="twelve crates of apples")
        rows.received(box, CARLA, subject="Another shipment", preview="crates again")
        assert len(search.search_messages("crates")) == 2
        first.subject, first.preview = "Changed", "now about bananas"
        db.session.commit()
        assert _subjects(search.search_messages("bananas")) == ["Changed"]
        assert _subjects(search.search_messages("apples")) == []
        assert store.delete_inbox_mail(box.id) == 2
        db.session.commit()
        assert search.search_messages("crates") == [] and search.search_messages("bananas") == []
        _assert_index_intact()


def test_mail_stored_in_bulk_is_indexed(app, admin, monkeypatch):
    """The sync's path: many rows per INSERT statement (a few per test here), every one of them indexed."""
    monkeypatch.setattr(store, "ROWS_PER_STATEMENT", 7)
    with app.app_context():
        box = MailRows().inbox("team@team.example", owner_id=admin)
        db.session.add(Contact(email=CARLA[1]))
        db.session.commit()
        date = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
        rows = [dict(inbox_id=box.id, folder_id=box.folders[0].id, uid=n, message_id=f"b{n}@customer.example",
                     dedup_key=f"b{n}@customer.example", direction="in", subject=f"Pallet {n}",
                     from_email=CARLA[1], from_name=CARLA[0], date=date, internal_date=date, size=100, flags="",
                     in_reply_to=None, references=None, auto_submitted=None, precedence=None, list_id=None,
                     list_unsubscribe=False, x_autoreply=False, content_type="text/plain", automated=False,
                     preview=f"warehouse code w{n}x", parse_error=None, created_at=date)
                for n in range(1, 24)]  # three statements of 7 rows and one of 2
        addresses = [[dict(role="from", email=CARLA[1], name=CARLA[0], inbox_id=box.id, date=date)] for _ in rows]
        ids = store.insert_messages(rows, addresses)
        db.session.commit()
        assert len(set(ids)) == 23
        assert len(search.search_messages("pallet", limit=100)) == 23
        assert _subjects(search.search_messages("w1x")) == ["Pallet 1"]
        assert _subjects(search.search_messages("w23x")) == ["Pallet 23"]
        _assert_index_intact()
        if db.engine.dialect.name == "sqlite":  # the bulk insert's mark is gone: other writers' rows are indexed
            assert db.session.execute(sa.text("SELECT count(*) FROM mail_search_bulk_insert")).scalar() == 0
        MailRows().sent(box, CARLA, subject="Pallet by hand", preview="typed in")  # another folder: UID 1 is free
        assert _subjects(search.search_messages("typed")) == ["Pallet by hand"]
        _assert_index_intact()


def _bulk_rows(box, uids, date=dt.datetime(2024, 3, 1, tzinfo=dt.UTC)):
    rows = [dict(inbox_id=box.id, folder_id=box.folders[0].id, uid=n, message_id=f"b{n}@customer.example",
                 dedup_key=f"b{n}@customer.example", direction="in", subject=f"Crate {n}",
                 from_email=CARLA[1], from_name=CARLA[0], date=date, internal_date=date, size=100, flags="",
                 in_reply_to=None, references=None, auto_submitted=None, precedence=None, list_id=None,
                 list_unsubscribe=False, x_autoreply=False, content_type="text/plain", automated=False,
                 preview=f"dock code d{n}x", parse_error=None, created_at=date) for n in uids]
    return rows, [[dict(role="from", email=CARLA[1], name=CARLA[0], inbox_id=box.id, date=date)] for _ in rows]


def test_a_failed_bulk_insert_leaves_the_index_to_the_trigger_again(app, admin):
    """SQLite: a bulk insert that fails (here a UID stored twice) takes its mark with it, so the transaction's
    next rows are indexed by the trigger; what the failed statement wrote is gone, the index stays whole."""
    with app.app_context():
        box = MailRows().inbox("team@team.example", owner_id=admin)
        db.session.add(Contact(email=CARLA[1]))
        db.session.commit()
        store.insert_messages(*_bulk_rows(box, [1, 2]))
        with pytest.raises(sa.exc.IntegrityError):
            store.insert_messages(*_bulk_rows(box, [3, 2]))
        if db.engine.dialect.name == "sqlite":
            assert db.session.execute(sa.text("SELECT count(*) FROM mail_search_bulk_insert")).scalar() == 0
            MailRows().sent(box, CARLA, subject="Crate by hand", preview="typed in")
            assert sorted(_subjects(search.search_messages("crate", limit=10))) == ["Crate 1", "Crate 2",
                                                                                  "Crate by hand"]
            _assert_index_intact()
        db.session.rollback()


def test_rows_of_a_bulk_insert_indexed_out_of_order_are_indexed_once(app, admin):
    """The per-batch index statement takes an id range when the batch's ids are consecutive (always, with one
    writer) and the ids one by one otherwise; either way each row is indexed exactly once."""
    with app.app_context():
        box = MailRows().inbox("team@team.example", owner_id=admin)
        db.session.add(Contact(email=CARLA[1]))
        db.session.commit()
        connection = db.session.connection()
        prepared = store.prepare_rows(*_bulk_rows(box, [1, 2, 3]), connection.dialect.name)
        with store._search_index_filled_per_batch(connection) as index_batch:
            store._write_values(connection, store.messages, store.MESSAGE_COLUMNS, prepared.messages)
            ids = db.session.scalars(sa.select(store.messages.c.id).order_by("id")).all()
            index_batch([ids[0], ids[2]])
            index_batch([ids[1]])
        id_by_uid = dict(db.session.execute(sa.select(store.messages.c.uid, store.messages.c.id)).all())
        ids = [id_by_uid[uid] for uid in prepared.uids]
        store._write_values(connection, store.addresses, store.ADDRESS_COLUMNS, store._addresses_of(prepared, ids))
        db.session.commit()
        assert sorted(_subjects(search.search_messages("crate", limit=10))) == ["Crate 1", "Crate 2", "Crate 3"]
        assert _subjects(search.search_messages("d2x")) == ["Crate 2"]
        _assert_index_intact()


def _assert_index_intact():
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":
        # FTS5 compares the index with the content table and raises when they differ.
        connection.exec_driver_sql(
            "INSERT INTO mail_message_search (mail_message_search, rank) VALUES ('integrity-check', 1)")


def test_upgrade_indexes_the_mail_already_stored(empty_database_url, redis_url, tmp_path):
    app = create_app(_all_plugins_config(empty_database_url, tmp_path / "instance", REDIS_URL=redis_url))
    migrating.upgrade(app)
    migrating.downgrade(app, "mail", "4c7d2e9a1b30")  # the release before search
    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example")
        db.session.add(Contact(email="carla@customer.example"))
        db.session.commit()
        for n in range(30):
            rows.received(box, CARLA, subject=f"Order {n}", preview=f"about the harbour crane number {n}")
        db.session.remove()

    assert "mail" in migrating.upgrade(app)
    with app.app_context():
        assert len(search.search_messages("harbour cranes", limit=100)) == 30
        assert _subjects(search.search_messages("order 17")) == ["Order 17"]
        _assert_index_intact()
        db.session.remove()
        db.engine.dispose()


def test_a_narrow_search_looks_past_the_best_matches_of_others(app, admin, monkeypatch):
    """The index's best matches come first; when too few of them are on a timeline, the search looks
    further instead of answering with less than there is (and one contact's search ranks all at once)."""
    monkeypatch.setattr(search, "FIRST_CANDIDATES", 1)
    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example", owner_id=admin)
        db.session.add_all([Contact(email="carla@customer.example"), Contact(email="dan@buyer.example")])
        db.session.commit()
        for n in range(5):  # the best matches: "crates" in the subject, from a stranger and from Carla
            rows.received(box, STRANGER, subject=f"crates crates {n}", preview="crates")
            rows.received(box, CARLA, subject=f"crates {n}", preview="crates")
        rows.received(box, DAN, subject="Hello", preview="the crates arrived")
        dan = db.session.scalar(sa.select(Contact).where(Contact.email == "dan@buyer.example"))
        assert _subjects(search.search_messages("crates", contact=dan)) == ["Hello"]
        found = _subjects(search.search_messages("crates", limit=6))
        assert found[:5] == [f"crates {n}" for n in range(4, -1, -1)] and found[5] == "Hello"
