"""contacts_import on message rows written directly (no IMAP): rules, provider, importer, CLI, settings page."""
from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from host_app.extensions import db
from host_app.models import AutomationRule, Contact
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent, run_jobs
from plugins.contacts_import import importer
from plugins.contacts_import.models import BlockedEntry, ImportState
from plugins.contacts_import.rules import Exclusions, parse_block_entry
from plugins.mail.names import best_name, clean_name
from plugins.mail.people import MailboxProvider
from plugins.mail.testing import START, MailRows

INBOX = "sales@ourco.example"


@pytest.fixture
def rows(app, admin):
    """An app context with one inbox owned by the admin (admin@team.example, "Ada Admin")."""
    with app.app_context():
        mail = MailRows()
        mail.box = mail.inbox(INBOX, owner_id=admin)
        yield mail


def contacts() -> dict[str, Contact]:
    db.session.expire_all()
    return {c.email: c for c in db.session.scalars(sa.select(Contact))}


def block(value: str) -> None:
    kind, value = parse_block_entry(value)
    db.session.add(BlockedEntry(kind=kind, value=value))
    db.session.commit()


# --------------------------------------------------------------------------- pure rules


def test_block_entries_are_parsed_in_plain_words():
    assert parse_block_entry(" Spam@Marketing.Example ") == ("address", "spam@marketing.example")
    assert parse_block_entry("@Marketing.Example") == ("domain", "marketing.example")
    assert parse_block_entry("marketing.example") == ("domain", "marketing.example")
    for bad in ("", "   ", "not a domain", "a@b@c.example", "localhost"):
        with pytest.raises(ValueError) as error:
            parse_block_entry(bad)
        assert str(error.value)


def test_exclusions_team_domains_skip_public_providers():
    rules = Exclusions.build(["Sales@OurCo.example", "founder@gmail.com"],
                             blocked=[("domain", "spam.example"), ("address", "x@y.example")])
    assert rules.team_domains == {"ourco.example"}
    assert rules.reason("sales@ourco.example") == "team address"
    assert rules.reason("bob@ourco.example") == "team domain"
    assert rules.reason("founder@gmail.com") == "team address"
    assert rules.reason("friend@gmail.com") is None
    assert rules.reason("a@mail.spam.example") == "blocked"
    assert rules.reason("a@notspam.example") is None
    assert rules.reason("x@y.example") == "blocked"
    assert rules.reason("root@localhost") == "not a valid address"


def test_names_are_cleaned_and_the_most_frequent_recent_one_wins():
    assert clean_name('  "Bob  Smith" ', "bob@x.example") == "Bob Smith"
    assert clean_name("'Bob'", "bob@x.example") == "Bob"
    assert clean_name("bob@x.example", "bob@x.example") == ""
    assert clean_name("'BOB@x.example'", "bob@x.example") == ""
    assert clean_name("other@x.example", "bob@x.example") == ""
    t = START
    assert best_name([("Bob", 1, t), ('"Robert"', 2, t), ("Robert", 1, t), ("", 9, t)]) == "Robert"
    assert best_name([("Old", 2, t), ("New", 2, t + timedelta(days=1))]) == "New"
    assert best_name([("", 3, t), ("bob@x.example", 1, t)], "bob@x.example") == ""


# --------------------------------------------------------------------------- provider


def test_the_provider_is_offered_through_the_hook(rows, app):
    providers = importer.providers()
    assert isinstance(providers["imap_inbox"], MailboxProvider)
    label = dict(providers["imap_inbox"].sources())[rows.box.id]
    assert label == "from Ada Admin's mailbox" and "Admin-only" not in label


def test_people_aggregate_names_dates_and_directions(rows):
    box = rows.box
    first = rows.received(box, ("Bob", "bob@client.example"), date=START)
    rows.received(box, ("Bob Smith", "Bob@Client.example"), date=START + timedelta(days=1))
    rows.sent(box, ("Bob Smith", "bob@client.example"), date=START + timedelta(days=3))
    rows.received(box, ("List poster", "poster@lists.example"), automated=True)
    rows.sent(box, [("Carol", "carol@client.example")], cc=[("Dan", "dan@client.example")])
    rows.received(box, ("Eve", "eve@client.example"), automated=True)
    rows.received(box, ("Eve", "eve@client.example"))
    # Others on an inbound message's To/Cc are not our correspondents.
    rows.message(box, "in", "frank@client.example", to=[box.email, "gina@client.example"])
    people = {p.email: p for p in MailboxProvider().people(box.id)}
    assert set(people) == {"bob@client.example", "poster@lists.example", "carol@client.example",
                           "dan@client.example", "eve@client.example", "frank@client.example"}
    bob = people["bob@client.example"]
    assert (bob.name, bob.we_wrote_to, bob.wrote_to_us, bob.automated) == ("Bob Smith", True, True, False)
    assert bob.first_seen.replace(tzinfo=None) == first.date.replace(tzinfo=None)
    assert bob.last_seen.replace(tzinfo=None) == (START + timedelta(days=3)).replace(tzinfo=None)
    poster = people["poster@lists.example"]
    assert (poster.automated, poster.wrote_to_us, poster.we_wrote_to) == (True, False, False)
    assert people["dan@client.example"].we_wrote_to and people["dan@client.example"].name == "Dan"
    assert not people["eve@client.example"].automated  # she also wrote to us herself
    assert people["eve@client.example"].wrote_to_us


# --------------------------------------------------------------------------- exclusion rules and policy


def test_every_exclusion_rule(rows, app):
    box = rows.box
    other = rows.inbox("help@support-team.example", username="helpdesk-login@imap-host.example")
    with app.app_context():
        make_agent(app, "agent.on.gmail@gmail.com", "agent-password-1")
    wanted = {
        "client@customer.example": "Client",
        "friend@gmail.com": "Friend on a public provider",
        "listed-but-written@lists.example": "We wrote to them",
    }
    for email, name in wanted.items():
        rows.received(box, (name, email))
    rows.received(box, "listed-but-written@lists.example", automated=True, list_id="dev.lists.example")
    rows.sent(box, ("We wrote to them", "listed-but-written@lists.example"))
    junk = [
        "admin@team.example",  # an agent
        "colleague@team.example",  # an agent's domain
        "other@ourco.example",  # this inbox's domain
        "help@support-team.example", "someone@support-team.example",  # another connected inbox and its domain
        "helpdesk-login@imap-host.example", "x@imap-host.example",  # an inbox login and its domain
        "noreply@shop.example", "no-reply@billing.example", "do-not-reply@bank.example",
        "mailer-daemon@mx.example", "postmaster@mx.example", "bounces+123@esp.example",
        "notifications@tracker.example",
        "blocked@spam.example", "anyone@blocked-domain.example", "sub@mail.blocked-domain.example",
    ]
    for email in junk:
        rows.received(box, email)
    rows.received(box, ("Newsletter", "news@letters.example"), automated=True, list_unsubscribe=True)
    rows.received(box, ("List member", "member@lists.example"), automated=True, list_id="dev.lists.example")
    rows.received(box, ("Out of office", "away@customer2.example"), automated=True, auto_submitted="auto-replied")
    block("blocked@spam.example")
    block("blocked-domain.example")
    result = importer.import_inbox(box.id)
    assert result["created"] == 3
    assert set(contacts()) == set(wanted)
    assert result["skipped"] == {"blocked": 3, "machine address": 7, "only bulk or automatic mail": 3,
                                 "team address": 3, "team domain": 4}
    assert other.id  # the second inbox only made its addresses the team's


def test_policy_people_we_emailed_only_or_also_who_emailed_us(rows):
    box = rows.box
    rows.received(box, ("Writer", "writer@customer.example"))
    rows.sent(box, ("Recipient", "recipient@customer.example"))
    state = importer.inbox_state(box.id)
    state.policy = "we_wrote"
    db.session.commit()
    assert importer.dry_run(box)["would_create"] == 1
    assert importer.import_inbox(box.id)["created"] == 1
    assert set(contacts()) == {"recipient@customer.example"}
    state.policy = "any"
    db.session.commit()
    assert importer.import_inbox(box.id, full=True)["created"] == 1
    assert set(contacts()) == {"recipient@customer.example", "writer@customer.example"}


def test_policy_change_on_the_page_rereads_the_mailbox(app, rows):
    box = rows.box
    rows.received(box, ("Writer", "writer@customer.example"))
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    response = client.post(f"/settings/contacts-import/inboxes/{box.id}/policy", data={"policy": "we_wrote"})
    assert response.status_code == 302
    assert importer.import_inbox(box.id)["created"] == 0
    rows.sent(box, "later@customer.example")
    client.post(f"/settings/contacts-import/inboxes/{box.id}/policy", data={"policy": "any"})
    db.session.expire_all()
    assert db.session.get(ImportState, box.id).last_message_id is None
    assert importer.import_inbox(box.id)["created"] == 2
    bad = client.post(f"/settings/contacts-import/inboxes/{box.id}/policy", data={"policy": "everyone"},
                      follow_redirects=True)
    assert "Choose who becomes a contact" in bad.get_data(as_text=True)


# --------------------------------------------------------------------------- contacts, names, idempotence


def test_contacts_get_source_owner_and_are_created_once(rows, runner):
    box = rows.box
    rows.received(box, ("Bob", "bob@customer.example"))
    rows.sent(box, "BOB@Customer.example")
    first = importer.import_inbox(box.id)
    again = importer.import_inbox(box.id, full=True)
    assert (first["created"], again["created"], again["already_contacts"]) == (1, 0, 1)
    listed = json.loads(runner.invoke(args=["contacts", "list", "--json"]).output)
    assert listed == [{"email": "bob@customer.example", "name": "Bob", "owner": "admin@team.example",
                       "source": "from Ada Admin's mailbox", "tags": [], "attributes": {}}]


def test_hand_edited_names_stay_and_empty_names_are_filled(rows):
    box = rows.box
    db.session.add_all([
        Contact(email="edited@customer.example", name="Dr. Edited", name_edited=True),
        Contact(email="emptied@customer.example", name="", name_edited=True),
        Contact(email="unnamed@customer.example", name=""),
    ])
    db.session.commit()
    for email in ("edited@customer.example", "emptied@customer.example", "unnamed@customer.example"):
        rows.received(box, ("Name From Mail", email))
    result = importer.import_inbox(box.id)
    assert (result["created"], result["named"]) == (0, 1)
    found = contacts()
    assert found["edited@customer.example"].name == "Dr. Edited"
    assert found["emptied@customer.example"].name == ""
    assert found["unnamed@customer.example"].name == "Name From Mail"


def test_a_contact_created_meanwhile_is_skipped_not_an_error(rows):
    box = rows.box
    rows.received(box, "racer@customer.example")
    rows.received(box, "other@customer.example")
    plan = importer.plan_inbox(box)
    # Another worker (or an agent) creates one of them between planning and inserting.
    db.session.add(Contact(email="racer@customer.example", name="Agent typed"))
    db.session.commit()
    created = importer.create_contacts(plan.to_create, "test", None)
    db.session.commit()
    assert len(created) == 1
    assert contacts()["racer@customer.example"].name == "Agent typed"


# --------------------------------------------------------------------------- after a sync: incremental


_run_ids = itertools.count(1)


def synced(inbox_id: int, app) -> None:
    """What a transport tells the mail readers after a sync committed (the mail core's mailbox_synced hook),
    then the follow-up jobs that enqueued, on a real RQ worker."""
    db.session.commit()  # the worker's session writes: this one holds no read transaction meanwhile
    for plugin, _, error in app.extensions["plugins"].call_each(
            "mailbox_synced", app=app, inbox_id=inbox_id, run_id=next(_run_ids), status="ok", new_messages=1,
            removed_messages=0):
        assert error is None, (plugin, error)
    run_jobs(app)
    db.session.expire_all()  # what the worker wrote, not what this session last read


def test_listener_runs_first_and_only_when_create_users_is_on(rows, app):
    impls = app.extensions["plugins"].pm.hook.mailbox_synced.get_hookimpls()
    assert impls[-1].plugin_name == "contacts_import" and impls[-1].tryfirst  # called first
    box = rows.box
    rows.received(box, "first@customer.example")
    synced(box.id, app)
    assert contacts() == {}
    importer.inbox_state(box.id).create_users = True
    db.session.commit()
    synced(box.id, app)
    assert set(contacts()) == {"first@customer.example"}


def test_after_a_sync_only_new_addresses_are_looked_at(rows, app):
    box = rows.box
    importer.inbox_state(box.id).create_users = True
    db.session.commit()
    rows.received(box, "old@customer.example")
    synced(box.id, app)  # no watermark yet: the whole mailbox
    state = db.session.get(ImportState, box.id)
    assert state.last_message_id and state.status == "done" and state.last_created == 1
    # An agent deletes the contact; the next sync must not bring it back unless that person writes again.
    db.session.delete(contacts()["old@customer.example"])
    db.session.commit()
    rows.received(box, "new@customer.example")
    synced(box.id, app)
    assert set(contacts()) == {"new@customer.example"}
    rows.received(box, "old@customer.example")
    synced(box.id, app)
    assert set(contacts()) == {"new@customer.example", "old@customer.example"}


def test_contact_created_is_called_in_chunks_and_automations_run(rows, app, monkeypatch):
    box = rows.box
    for i in range(7):
        rows.received(box, (f"Person {i}", f"p{i}@customer.example"))
    db.session.add(AutomationRule(name="tag new", trigger="contact_created",
                                  actions=[{"key": "add_tag", "params": {"tag": "from-mail"}}]))
    db.session.commit()
    calls = []

    class Spy:
        from host_app import hookimpl

        @hookimpl
        def contact_created(self, contacts):
            calls.append(sorted(c.email for c in contacts))

    app.extensions["plugins"].pm.register(Spy(), name="spy")
    monkeypatch.setattr(importer, "HOOK_CHUNK", 3)
    assert importer.import_inbox(box.id)["created"] == 7
    assert [len(c) for c in calls] == [3, 3, 1]
    assert all(c.tags == ["from-mail"] for c in contacts().values())


# --------------------------------------------------------------------------- speed: set-based


def count_statements(func) -> int:
    statements = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        func()
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    return len(statements)


def _fill(mail: MailRows, inbox, people: int, messages_each: int) -> None:
    """``people`` correspondents, each with ``messages_each`` messages, written in bulk."""
    from plugins.mail.models import Message, MessageAddress

    folder = inbox.folders[0]
    base = db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(Message.id), 0)))
    messages, addresses = [], []
    n = 0
    for person in range(people):
        for _ in range(messages_each):
            n += 1
            pk = base + n
            email = f"person{person}@customer{person % 50}.example"
            messages.append({"id": pk, "inbox_id": inbox.id, "folder_id": folder.id, "uid": pk, "dedup_key": f"k{pk}",
                             "direction": "in", "subject": "s", "from_email": email, "from_name": f"Person {person}",
                             "date": START + timedelta(minutes=pk), "automated": False})
            addresses.append({"message_pk": pk, "role": "from", "email": email, "name": f"Person {person}",
                              "inbox_id": inbox.id})
            addresses.append({"message_pk": pk, "role": "to", "email": inbox.email, "name": "", "inbox_id": inbox.id})
    db.session.execute(sa.insert(Message.__table__), messages)
    db.session.execute(sa.insert(MessageAddress.__table__), addresses)
    db.session.commit()


def test_statements_do_not_grow_with_messages(rows, app):
    small = rows.inbox("small@ourco.example")
    large = rows.inbox("large@ourco.example")
    _fill(rows, small, people=60, messages_each=1)
    _fill(rows, large, people=60, messages_each=10)
    # People overlap across the two inboxes only in name; remove the first import's contacts before the second.
    few = count_statements(lambda: importer.import_inbox(small.id))
    db.session.execute(sa.delete(Contact))
    db.session.commit()
    many = count_statements(lambda: importer.import_inbox(large.id))
    assert len(contacts()) == 60
    assert many == few, (few, many)
    assert few < 40, few


# --------------------------------------------------------------------------- CLI


def test_cli_dry_run_json_then_import(rows, runner):
    box = rows.box
    rows.received(box, ("Zoë Müller", "zoe@customer.example"))
    rows.received(box, "nameless@customer.example")
    rows.received(box, "noreply@shop.example")
    dry = runner.invoke(args=["contacts", "import", "--inbox", str(box.id), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.output)
    assert preview["inbox_id"] == box.id and preview["would_create"] == 2
    assert preview["sample"] == [{"email": "zoe@customer.example", "name": "Zoë Müller"},
                                 {"email": "nameless@customer.example", "name": ""}]
    assert contacts() == {}
    done = runner.invoke(args=["contacts", "import", "--inbox", str(box.id), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["created"] == 2
    again = runner.invoke(args=["contacts", "import", "--inbox", str(box.id), "--json"])
    assert json.loads(again.output)["created"] == 0
    text = runner.invoke(args=["contacts", "import", "--inbox", str(box.id), "--dry-run"])
    assert "This will create 0 contacts" in text.output
    missing = runner.invoke(args=["contacts", "import", "--inbox", "999", "--dry-run", "--json"])
    assert missing.exit_code == 1 and "no connected inbox with id 999" in missing.output


# --------------------------------------------------------------------------- settings page


def test_settings_page_is_admin_only_and_listed(app, rows, agent_client):
    assert agent_client.get("/settings/contacts-import/").status_code == 403
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    assert "/settings/contacts-import/" in client.get("/settings/").get_data(as_text=True)


def test_settings_page_shows_dry_run_count_and_sample(app, rows):
    box = rows.box
    for i in range(25):
        rows.received(box, (f"Client Nr {i}", f"c{i}@customer.example"))
    rows.received(box, "<script>@customer.example")
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    page = client.get("/settings/contacts-import/").get_data(as_text=True)
    assert "This will create <span class=\"would-create\">25</span> contacts" in page
    assert page.count("@customer.example</td>") == 20
    assert "…and 5 more." in page and "Turn Create users on" in page
    assert "<script>" not in page


def test_block_list_is_edited_on_the_page(app, rows):
    box = rows.box
    rows.received(box, "spammer@spam.example")
    rows.received(box, "promo@adverts.example")
    rows.received(box, "friend@customer.example")
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    assert client.post("/settings/contacts-import/block", data={"entry": "Spammer@Spam.example"}).status_code == 302
    client.post("/settings/contacts-import/block", data={"entry": "@adverts.example"})
    duplicate = client.post("/settings/contacts-import/block", data={"entry": "spammer@spam.example"},
                            follow_redirects=True).get_data(as_text=True)
    assert "already on the block list" in duplicate
    bad = client.post("/settings/contacts-import/block", data={"entry": "not a thing"}, follow_redirects=True)
    assert "neither an e-mail address nor a domain" in bad.get_data(as_text=True)
    page = client.get("/settings/contacts-import/").get_data(as_text=True)
    assert "spammer@spam.example" in page and "adverts.example" in page
    assert "This will create <span class=\"would-create\">1</span> contact" in page
    assert importer.import_inbox(box.id)["created"] == 1
    entry = db.session.scalar(sa.select(BlockedEntry).where(BlockedEntry.value == "adverts.example"))
    assert client.post(f"/settings/contacts-import/block/{entry.id}/delete").status_code == 302
    assert importer.import_inbox(box.id)["created"] == 1  # unblocked: the next run reads the mailbox again
    assert set(contacts()) == {"friend@customer.example", "promo@adverts.example"}


def test_forms_need_a_csrf_token(crm_app_factory):
    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    token = login_page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD, "csrf_token": token})
    assert client.post("/settings/contacts-import/block", data={"entry": "x@spam.example"}).status_code == 400
    page = client.get("/settings/contacts-import/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    ok = client.post("/settings/contacts-import/block", data={"entry": "x@spam.example", "csrf_token": token})
    assert ok.status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(BlockedEntry.value)) == "x@spam.example"


def test_progress_json(app, rows):
    box = rows.box
    rows.received(box, "one@customer.example")
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    assert client.get(f"/settings/contacts-import/inboxes/{box.id}/progress.json").json["status"] == "never run"
    importer.import_inbox(box.id)
    progress = client.get(f"/settings/contacts-import/inboxes/{box.id}/progress.json").json
    assert progress == {"inbox_id": box.id, "status": "done", "done": 1, "total": 1, "last_created": 1,
                        "total_created": 1, "error": None}
    assert client.get("/settings/contacts-import/inboxes/999/progress.json").status_code == 404


def test_import_command_refuses_when_the_plugin_is_disabled(crm_app_factory):
    crm_app_factory()  # registers `contacts import` on the host's shared `contacts` group
    app = crm_app_factory(disabled=["contacts_import"])
    result = app.test_cli_runner().invoke(args=["contacts", "import", "--inbox", "1", "--dry-run", "--json"])
    assert result.exit_code != 0
    assert "contacts_import plugin is disabled" in result.output or "No such command" in result.output


def test_turning_on_without_redis_imports_after_the_next_sync(crm_app_factory):
    app = crm_app_factory(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    with app.app_context():
        mail = MailRows()
        box = mail.inbox(INBOX)
        mail.received(box, "waiting@customer.example")
        client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
        page = client.post(f"/settings/contacts-import/inboxes/{box.id}/create-users/on", follow_redirects=True)
        assert "the import runs after the next sync" in page.get_data(as_text=True)
        db.session.expire_all()
        state = db.session.get(ImportState, box.id)
        assert state.create_users and state.status == "idle" and state.last_message_id is None
        box_id = box.id
    back = crm_app_factory()  # Redis answers again by the next sync (the sync itself runs on RQ)
    with back.app_context():
        synced(box_id, back)
        assert set(contacts()) == {"waiting@customer.example"}
