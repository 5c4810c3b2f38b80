"""contacts_import end to end: real Dovecot mailboxes, the real sync, RQ, the CLI and the settings page."""
from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
import sqlalchemy as sa

from host_app.extensions import db
from host_app.jobs import make_worker, queue
from host_app.models import AutomationRule, Contact
from host_app.testing import ADMIN_PASSWORD, log_in
from plugins.contacts_import.models import ImportState
from plugins.imap_inbox.testing import mailgen
from tests.support import imap_helpers
from tests.support.imap_helpers import connect_inbox

BASE = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)
_numbers = itertools.count(1)


def mail(sender, to, *, subject="Hello", cc=None, headers=None, charset="utf-8", raw_headers=None) -> bytes:
    n = next(_numbers)
    return mailgen.make_message(sender, to, subject, date=BASE + dt.timedelta(hours=n),
                                message_id=f"<ci-{n}@test.example>", cc=cc, headers=headers, charset=charset,
                                raw_headers=raw_headers)


def connect(app, mailbox, owner_id, create_users=False, **overrides) -> int:
    inbox_id = connect_inbox(app, mailbox, owner_id, **{"name": "Sales desk (admin-only name)",
                                                        "settings": {"create_users": create_users}, **overrides})
    with app.app_context():
        queue(app).empty()  # the tests run syncs themselves
    return inbox_id


def sync(app, inbox_id: int) -> dict:
    """The sync, then its follow-up jobs (the import) on a real RQ worker."""
    result = imap_helpers.sync_and_follow_up(app, inbox_id)
    assert result.get("status") in ("ok", None) or "error" not in result, result
    return result


def contacts(app) -> dict[str, Contact]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Contact)).all()
        for row in rows:
            db.session.expunge(row)
        return {c.email: c for c in rows}


def cli_json(app, *args) -> object:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def admin_client(app):
    return log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)


@pytest.fixture
def me(mailbox):
    """The mailbox's own address, as From of what it sent."""
    return ("Team Desk", mailbox.username)


# --------------------------------------------------------------------------- exclusions


def test_each_exclusion_rule_on_a_synced_mailbox(app, admin, mailbox, me):
    mailbox.write("INBOX", [
        mail(("Carla Customer", "carla@customer.example"), mailbox.username),
        mail(("Friend", "friend@gmail.com"), mailbox.username),  # public provider: a person, not the team
        mail(("Colleague", "colleague@team.example"), mailbox.username),  # agent/inbox domain
        mail(("Shop Owner", "owner@ourshop.example"), mailbox.username),  # the other inbox's address
        mail(("Shop Staff", "staff@ourshop.example"), mailbox.username),  # ... and its domain
        mail(("Gmail Desk", "shop.desk@gmail.com"), mailbox.username),  # an inbox's own public address
        mail(("Shop", "noreply@shop.example"), mailbox.username, headers={"Auto-Submitted": "auto-generated"}),
        mail(("Shop", "no-reply@billing.example"), mailbox.username),
        mail(("Bank", "do-not-reply@bank.example"), mailbox.username),
        mail(("Mail Delivery Subsystem", "MAILER-DAEMON@mx.example"), mailbox.username,
             subject="Undelivered Mail Returned to Sender"),
        mail("postmaster@mx2.example", mailbox.username),
        mail("bounces+123-abc@esp.example", mailbox.username),
        mail(("Tracker", "notifications@tracker.example"), mailbox.username),
        mail(("List Member", "member@lists.example"), "dev@lists.example",
             headers={"List-Id": "Developers <dev.lists.example>"}),
        mail(("Written To", "written@lists.example"), "dev@lists.example",
             headers={"List-Id": "Developers <dev.lists.example>"}),
        mail(("Newsletter", "news@letters.example"), mailbox.username,
             headers={"List-Unsubscribe": "<mailto:unsubscribe@letters.example>"}),
        mail(("Promo", "promo@bulk.example"), mailbox.username, headers={"Precedence": "bulk"}),
        mail(("Away Person", "away@client2.example"), mailbox.username, headers={"Auto-Submitted": "auto-replied"}),
        mail(("Not Auto", "human@client2.example"), mailbox.username, headers={"Auto-Submitted": "no"}),
        mail(("Spammer", "spammer@spam.example"), mailbox.username),
        mail(("Sub Spam", "x@mail.blocked.example"), mailbox.username),
    ])
    mailbox.write("Sent", [mail(me, [("Written To", "written@lists.example")], subject="Off-list reply")])
    inbox_id = connect(app, mailbox, admin)
    with app.app_context():
        from plugins.mail.models import Inbox

        # Other connected inboxes (not synced here): only their addresses and domains matter.
        for email, username in (("owner@ourshop.example", "owner@ourshop.example"),
                                ("shop.desk@gmail.com", "desk2@team.example")):
            db.session.add(Inbox(name=f"other {email}", email=email, username=username))
        db.session.commit()
    client = admin_client(app)
    client.post("/settings/contacts-import/block", data={"entry": "spammer@spam.example"})
    client.post("/settings/contacts-import/block", data={"entry": "blocked.example"})
    # Create users switched on (as on imap_inbox's edit page), then the first sync imports the whole mailbox.
    with app.app_context():
        from plugins.imap_inbox import service
        from plugins.mail.models import Inbox

        service.update_inbox(db.session.get(Inbox, inbox_id), settings={"create_users": True}, check=False)
    sync(app, inbox_id)
    assert set(contacts(app)) == {
        "carla@customer.example", "friend@gmail.com", "written@lists.example", "human@client2.example",
    }


# --------------------------------------------------------------------------- policy


def test_policy_people_we_emailed_only_then_both(app, admin, mailbox, me):
    mailbox.write("INBOX", [mail(("Writer Only", "writer@client.example"), mailbox.username)])
    mailbox.write("Sent", [mail(me, [("Recipient", "recipient@client.example")],
                                cc=[("Copied", "copied@client.example")])])
    inbox_id = connect(app, mailbox, admin)
    sync(app, inbox_id)
    client = admin_client(app)
    client.post(f"/settings/contacts-import/inboxes/{inbox_id}/policy", data={"policy": "we_wrote"})
    preview = cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--dry-run", "--json")
    assert preview["would_create"] == 2
    assert cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--json")["created"] == 2
    assert set(contacts(app)) == {"recipient@client.example", "copied@client.example"}
    client.post(f"/settings/contacts-import/inboxes/{inbox_id}/policy", data={"policy": "any"})
    with app.app_context():
        from plugins.imap_inbox import service
        from plugins.mail.models import Inbox

        service.update_inbox(db.session.get(Inbox, inbox_id), settings={"create_users": True}, check=False)
    sync(app, inbox_id)  # nothing new on the server, but the policy widened: the whole mailbox again
    assert set(contacts(app)) == {"recipient@client.example", "copied@client.example", "writer@client.example"}


def test_people_we_bcc_d_count_as_people_we_wrote_to(app, admin, mailbox, me):
    mailbox.write("INBOX", [
        # A Bcc header some servers leave on delivered mail: nobody we wrote to.
        mail(("Writer", "writer@client.example"), mailbox.username,
             headers={"Bcc": "Stranger <stranger@client.example>"}),
    ])
    mailbox.write("Sent", [mail(me, [("Recipient", "recipient@client.example")],
                                headers={"Bcc": "Hidden Helper <hidden@client.example>"})])
    inbox_id = connect(app, mailbox, admin)
    sync(app, inbox_id)
    client = admin_client(app)
    client.post(f"/settings/contacts-import/inboxes/{inbox_id}/policy", data={"policy": "we_wrote"})
    assert cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--json")["created"] == 2
    found = contacts(app)
    assert set(found) == {"recipient@client.example", "hidden@client.example"}
    assert found["hidden@client.example"].name == "Hidden Helper"
    client.post(f"/settings/contacts-import/inboxes/{inbox_id}/policy", data={"policy": "any"})
    cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--json")
    assert "stranger@client.example" not in contacts(app)
    assert "writer@client.example" in contacts(app)


# --------------------------------------------------------------------------- names


def test_names_from_decoded_display_names(app, admin, mailbox, me):
    with app.app_context():
        db.session.add_all([
            Contact(email="edited@client.example", name="Typed By Agent", name_edited=True),
            Contact(email="unnamed@client.example", name=""),
        ])
        db.session.commit()
    mailbox.write("INBOX", [
        mail(("Zoë Müller", "zoe@client.example"), mailbox.username, charset="utf-8"),
        mail(("Jürgen Weiß", "juergen@client.example"), mailbox.username, charset="iso-8859-1"),
        mail('"Smith, John" <john@client.example>', mailbox.username),
        mail("anne@client.example (Anne Comment)", mailbox.username),
        mail('"bob@client.example" <bob@client.example>', mailbox.username),
        mail(("  'Quoted Carla'  ", "carla@client.example"), mailbox.username),
        mail(("Mail Name", "edited@client.example"), mailbox.username),
        mail(("Filled From Mail", "unnamed@client.example"), mailbox.username),
        mail(("Old Nick", "nick@client.example"), mailbox.username),
        mail(("Nicholas Brown", "nick@client.example"), mailbox.username),
        mail(("Nicholas Brown", "nick@client.example"), mailbox.username),
    ])
    mailbox.write("Sent", [mail(me, [("Nick", "nick@client.example")])])
    inbox_id = connect(app, mailbox, admin, create_users=True)
    sync(app, inbox_id)
    names = {email: c.name for email, c in contacts(app).items()}
    assert names == {
        "zoe@client.example": "Zoë Müller",
        "juergen@client.example": "Jürgen Weiß",
        "john@client.example": "Smith, John",
        "anne@client.example": "Anne Comment",
        "bob@client.example": "",
        "carla@client.example": "Quoted Carla",
        "edited@client.example": "Typed By Agent",
        "unnamed@client.example": "Filled From Mail",
        "nick@client.example": "Nicholas Brown",
    }


# --------------------------------------------------------------------------- after syncs, idempotence, CLI


def test_automatic_import_after_each_sync_is_incremental_and_idempotent(app, admin, mailbox, me):
    with app.app_context():
        db.session.add(AutomationRule(name="Tag imported", trigger="contact_created",
                                      actions=[{"key": "add_tag", "params": {"tag": "imported"}}]))
        db.session.commit()
    mailbox.write("INBOX", [mail(("First", "first@client.example"), mailbox.username)])
    inbox_id = connect(app, mailbox, admin, create_users=True)
    sync(app, inbox_id)
    assert set(contacts(app)) == {"first@client.example"}
    sync(app, inbox_id)  # nothing new
    assert len(contacts(app)) == 1
    mailbox.append("INBOX", mail(("Second", "second@client.example"), mailbox.username))
    mailbox.append("Sent", mail(me, [("First Again", "FIRST@client.example"), ("Third", "third@client.example")]))
    sync(app, inbox_id)
    found = contacts(app)
    assert set(found) == {"first@client.example", "second@client.example", "third@client.example"}
    assert found["first@client.example"].name == "First"  # existing contact left as it was
    with app.app_context():
        state = db.session.get(ImportState, inbox_id)
        assert state.last_created == 2 and state.total_created == 3 and state.status == "done"
        tagged = db.session.scalars(sa.select(Contact)).all()
        assert all(c.tags == ["imported"] for c in tagged)
    again = cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--json")
    assert again["created"] == 0 and again["already_contacts"] == 3
    listed = cli_json(app, "contacts", "list", "--json")
    assert {(c["email"], c["source"], c["owner"]) for c in listed} == {
        (email, "from Ada Admin's mailbox", "admin@team.example")
        for email in ("first@client.example", "second@client.example", "third@client.example")
    }
    assert all("admin-only" not in c["source"] for c in listed)


def test_without_create_users_a_sync_creates_nobody(app, admin, mailbox):
    mailbox.write("INBOX", [mail(("Someone", "someone@client.example"), mailbox.username)])
    inbox_id = connect(app, mailbox, admin, create_users=False)
    sync(app, inbox_id)
    assert contacts(app) == {}


def test_dry_run_on_cli_and_page_then_turn_on_runs_the_import_on_a_worker(app, admin, mailbox, me):
    people = [(f"Client {i:02d}", f"client{i:02d}@client.example") for i in range(23)]
    junk = [mail("noreply@shop.example", mailbox.username)]
    mailbox.write("INBOX", [mail(p, mailbox.username) for p in people] + junk)
    inbox_id = connect(app, mailbox, admin)
    sync(app, inbox_id)
    assert contacts(app) == {}
    preview = cli_json(app, "contacts", "import", "--inbox", str(inbox_id), "--dry-run", "--json")
    assert preview["inbox_id"] == inbox_id and preview["would_create"] == 23
    assert len(preview["sample"]) == 20 and all(s["name"].startswith("Client ") for s in preview["sample"])
    assert {s["email"] for s in preview["sample"]} <= {p[1] for p in people}
    client = admin_client(app)
    page = client.get("/settings/contacts-import/").get_data(as_text=True)
    assert 'This will create <span class="would-create">23</span> contacts' in page
    assert "Client 22" in page or "Client 00" in page
    response = client.post(f"/settings/contacts-import/inboxes/{inbox_id}/create-users/on")
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(ImportState, inbox_id).create_users is True
        assert db.session.get(ImportState, inbox_id).status == "queued"
    assert "Import queued" in client.get("/settings/contacts-import/").get_data(as_text=True)
    assert contacts(app) == {}
    with app.app_context():  # the worker runs jobs in this app (the test database)
        assert make_worker(app, simple=True).work(burst=True)
    assert len(contacts(app)) == 23
    page = client.get("/settings/contacts-import/").get_data(as_text=True)
    assert "23 new contacts" in page and "Turn Create users off" in page
    client.post(f"/settings/contacts-import/inboxes/{inbox_id}/create-users/off")
    with app.app_context():
        assert db.session.get(ImportState, inbox_id).create_users is False


def test_turning_create_users_off_and_on_on_the_inbox_edit_page_reads_the_whole_mailbox(app, admin, mailbox, me):
    mailbox.write("INBOX", [mail(("Carla Customer", "carla@customer.example"), mailbox.username)])
    inbox_id = connect(app, mailbox, admin, create_users=True)
    sync(app, inbox_id)
    assert set(contacts(app)) == {"carla@customer.example"}
    with app.app_context():
        watermark = db.session.get(ImportState, inbox_id).last_message_id
        assert watermark
        # Removed by hand while Create users is off: her mail lies below the watermark.
        db.session.execute(sa.delete(Contact).where(Contact.email == "carla@customer.example"))
        db.session.commit()

    client = admin_client(app)
    form = {"name": "Sales desk", "provider": "other", "host": mailbox.host, "username": mailbox.username,
            "password": "", "port": str(mailbox.port), "security": "ssl", "ca_file": mailbox.ca_file,
            "owner_id": str(admin), "extra_folders": ""}
    assert client.post(f"/settings/inboxes/{inbox_id}/edit", data=form).status_code == 302  # box unticked: off
    mailbox.append("INBOX", mail(("Dora Newcomer", "dora@customer.example"), mailbox.username))
    sync(app, inbox_id)
    assert contacts(app) == {}  # off: nobody is created
    with app.app_context():
        assert db.session.get(ImportState, inbox_id).last_message_id == watermark

    assert client.post(f"/settings/inboxes/{inbox_id}/edit",
                       data={**form, "create_users": "y"}).status_code == 302  # on again
    with app.app_context():
        state = db.session.get(ImportState, inbox_id)
        assert state.last_message_id is None and state.status == "queued"
        assert make_worker(app, simple=True).work(burst=True)
        state = db.session.get(ImportState, inbox_id)
        assert state.status == "done" and state.last_message_id > watermark
    assert set(contacts(app)) == {"carla@customer.example", "dora@customer.example"}

    # Saving the page again with the box still ticked is no switch: the watermark stays.
    assert client.post(f"/settings/inboxes/{inbox_id}/edit",
                       data={**form, "name": "Sales", "create_users": "y"}).status_code == 302
    with app.app_context():
        assert db.session.get(ImportState, inbox_id).last_message_id is not None
