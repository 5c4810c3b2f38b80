"""Agents, contacts, access rules, CSRF and background jobs of the host."""

from __future__ import annotations

import json

import pytest

from host_app.extensions import db
from host_app.models import Agent, Contact
from host_app.testing import log_in


def test_agents_create_reads_password_from_stdin(runner, app):
    result = runner.invoke(
        args=["agents", "create", "--email", "Boss@Team.example", "--name", "Boss", "--admin", "--password-stdin"],
        input="correct horse battery\n",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"id": 1, "email": "boss@team.example", "role": "admin"}
    with app.app_context():
        agent = db.session.scalar(db.select(Agent))
        assert agent.check_password("correct horse battery") and "correct horse" not in agent.password_hash
    again = runner.invoke(
        args=["agents", "create", "--email", "boss@team.example", "--name", "B", "--password-stdin"],
        input="another password\n",
    )
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(
        args=["agents", "create", "--email", "x@team.example", "--name", "X", "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 1 and "at least 8 characters" in short.output


def test_login_logout_and_bad_password(client, admin):
    bad = client.post("/login", data={"email": "admin@team.example", "password": "wrong"})
    assert bad.status_code == 200 and "Wrong e-mail or password." in bad.get_data(as_text=True)
    assert client.get("/contacts/").status_code == 302
    log_in(client, "admin@team.example", "admin-password-1")
    assert client.get("/contacts/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/contacts/").status_code == 302


def test_login_never_redirects_off_site(client, admin):
    response = client.post(
        "/login?next=//evil.example/x", data={"email": "admin@team.example", "password": "admin-password-1"}
    )
    assert response.headers["Location"] == "/"


HOST_ADMIN_ONLY = ["/settings/", "/settings/plugins", "/automations/", "/automations/new", "/automations/runs"]
HOST_AGENT_PAGES = ["/contacts/", "/contacts/new"]


@pytest.mark.parametrize("path", HOST_ADMIN_ONLY + HOST_AGENT_PAGES)
def test_anonymous_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", HOST_ADMIN_ONLY)
def test_agents_cannot_open_admin_pages(agent_client, path):
    assert agent_client.get(path).status_code == 403


@pytest.mark.parametrize("path", HOST_AGENT_PAGES)
def test_agents_use_contacts(agent_client, path):
    assert agent_client.get(path).status_code == 200


def test_agent_navigation_hides_settings(agent_client):
    page = agent_client.get("/contacts/").get_data(as_text=True)
    assert "Settings" not in page and "Automations" not in page


def test_contacts_are_unique_per_normalized_address(admin_client, app):
    assert (
        admin_client.post("/contacts/new", data={"email": "Ann@Example.org", "name": "Ann", "owner_id": 0}).status_code
        == 302
    )
    dup = admin_client.post("/contacts/new", data={"email": " ann@EXAMPLE.org", "name": "Ann 2", "owner_id": 0})
    assert "A contact with this e-mail already exists." in dup.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(db.select(Contact.email)).all() == ["ann@example.org"]
        contact_id = db.session.scalar(db.select(Contact.id))
    # Its source reads in words on the page (never a code such as "manual").
    assert "<dt>Source</dt><dd>added by hand</dd>" in admin_client.get(f"/contacts/{contact_id}").get_data(as_text=True)


def test_contact_search_paging_and_tags(admin_client, app):
    with app.app_context():
        db.session.add_all(Contact(email=f"person{i:03}@example.org", name=f"Person {i:03}") for i in range(120))
        special = Contact(email="zed@acme.example", name="Zed Zebra")
        special.add_tag("vip")
        db.session.add(special)
        db.session.commit()
    first = admin_client.get("/contacts/").get_data(as_text=True)
    assert "Page 1 of 3" in first and "121 in all" in first
    found = admin_client.get("/contacts/?q=zebra").get_data(as_text=True)
    assert "zed@acme.example" in found and "person001" not in found
    tagged = admin_client.get("/contacts/?tag=vip").get_data(as_text=True)
    assert "zed@acme.example" in tagged and "person002" not in tagged


def test_editing_a_name_marks_it_hand_edited(admin_client, app):
    with app.app_context():
        contact = Contact(email="bob@example.org", name="bob")
        db.session.add(contact)
        db.session.commit()
        cid = contact.id
    response = admin_client.post(f"/contacts/{cid}/edit", data={"name": "Bob Builder", "tags": "a, b", "owner_id": 0})
    assert response.status_code == 302
    with app.app_context():
        contact = db.session.get(Contact, cid)
        assert (contact.name, contact.name_edited, contact.tags) == ("Bob Builder", True, ["a", "b"])


def test_contact_names_are_escaped(admin_client, app):
    with app.app_context():
        contact = Contact(email="x@example.org", name="<script>alert(1)</script>")
        db.session.add(contact)
        db.session.commit()
        cid = contact.id
    for path in ("/contacts/", f"/contacts/{cid}"):
        page = admin_client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_contacts_cli_json(runner, app):
    with app.app_context():
        contact = Contact(email="j@example.org", name="Jay", source="manual")
        contact.add_tag("t1")
        db.session.add(contact)
        db.session.commit()
    result = runner.invoke(args=["contacts", "list", "--json"])
    assert json.loads(result.output) == [
        {"email": "j@example.org", "name": "Jay", "source": "manual", "owner": None, "tags": ["t1"], "attributes": {}}
    ]
    missing = runner.invoke(args=["contacts", "timeline", "nobody@example.org", "--json"])
    assert missing.exit_code == 1 and "no contact with e-mail nobody@example.org" in missing.output


def test_bad_timeline_cursor_is_a_clear_400(admin_client, app):
    with app.app_context():
        contact = Contact(email="c@example.org")
        db.session.add(contact)
        db.session.commit()
        cid = contact.id
    response = admin_client.get(f"/contacts/{cid}?before=yesterday")
    assert response.status_code == 400 and "ISO 8601" in response.get_data(as_text=True)


def test_csrf_is_enforced_on_every_form(crm_app_factory):
    from host_app.testing import make_agent

    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    make_agent(app, "admin@team.example", "admin-password-1", admin=True)
    client = app.test_client()
    assert (
        client.post("/login", data={"email": "admin@team.example", "password": "admin-password-1"}).status_code == 400
    )
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    ok = client.post(
        "/login", data={"email": "admin@team.example", "password": "admin-password-1", "csrf_token": token}
    )
    assert ok.status_code == 302
    for path in ("/logout", "/settings/plugins/imap_inbox/disable", "/contacts/new", "/automations/new"):
        assert client.post(path, data={}).status_code == 400, path


def test_app_jobs_run_on_a_real_rq_worker(app):
    from host_app.jobs import enqueue, make_worker
    from tests.support.jobs_for_tests import count_contacts

    with app.app_context():
        db.session.add(Contact(email="w@example.org"))
        db.session.commit()
        job = enqueue(count_contacts)
        assert make_worker(app, simple=True).work(burst=True)
        job.refresh()
        assert job.return_value() == 1


def test_member_of_is_one_parameter_for_any_number_of_values(app):
    from host_app.sql import member_of

    with app.app_context():
        db.session.add_all([Contact(email=f"c{n}@example.org") for n in range(3)])
        db.session.commit()
        ids = sorted(db.session.scalars(db.select(Contact.id)))
        wanted = ["c0@example.org", "c2@example.org"] + [f"nobody{n}@example.org" for n in range(6000)]

        def emails(values):
            return sorted(db.session.scalars(db.select(Contact.email).where(member_of(Contact.email, values))))

        assert emails(wanted) == ["c0@example.org", "c2@example.org"]
        assert emails([]) == []
        assert sorted(db.session.scalars(db.select(Contact.id).where(member_of(Contact.id, ids[1:])))) == ids[1:]
        statement = db.select(Contact.id).where(member_of(Contact.email, wanted))
        assert len(statement.compile(db.engine).params) == 1  # not one per value


def test_utc_datetime_reads_back_aware_utc_and_refuses_naive_times(app):
    from datetime import UTC, datetime, timedelta, timezone

    import sqlalchemy as sa

    paris = datetime(2024, 3, 1, 11, 30, tzinfo=timezone(timedelta(hours=1)))
    with app.app_context():
        db.session.add(Contact(email="when@example.org", created_at=paris))
        db.session.commit()
        db.session.expire_all()
        stored = db.session.scalar(db.select(Contact.created_at))
        assert stored == paris and stored.tzinfo is UTC and stored.hour == 10
        # Core queries and comparisons go through the type as well.
        assert db.session.scalar(sa.select(Contact.__table__.c.created_at)).tzinfo is UTC
        assert db.session.scalar(db.select(Contact.id).where(Contact.created_at < paris + timedelta(seconds=1)))
        db.session.add(Contact(email="naive@example.org", created_at=datetime(2024, 3, 1, 10, 30)))
        with pytest.raises(sa.exc.StatementError, match="naive datetime 2024-03-01T10:30:00"):
            db.session.commit()
        db.session.rollback()


def test_bulk_insert_or_ignore_skips_rows_stored_already(app):
    from datetime import UTC, datetime

    from host_app.sql import bulk_insert_or_ignore, insert_or_ignore

    table = Contact.__table__
    when = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    def row(email, name=""):
        return {"email": email, "name": name, "name_edited": False, "source": "test", "owner_id": None,
                "attributes": {"from": name}, "created_at": when}

    with app.app_context():
        db.session.add(Contact(email="taken@example.org", name="First"))
        db.session.commit()
        inserted = bulk_insert_or_ignore(table, [row("new@example.org", "New"), row("taken@example.org", "Second")],
                                         returning=[table.c.id, table.c.created_at])
        assert [r.created_at for r in inserted] == [when]
        bulk_insert_or_ignore(table, [row("other@example.org")])
        db.session.execute(insert_or_ignore(table).values(row("other@example.org", "Again")))
        assert bulk_insert_or_ignore(table, []) == []
        db.session.commit()
        stored = {c.email: (c.id, c.name, c.attributes) for c in db.session.scalars(db.select(Contact))}
        assert stored["taken@example.org"][1] == "First" and stored["other@example.org"][1:] == ("", {"from": ""})
        assert stored["new@example.org"] == (inserted[0].id, "New", {"from": "New"})


@pytest.mark.parametrize("op", ["remove_condition_x", "remove_condition_99", "remove_action_-5", "remove_action_ 0",
                                "remove_condition_", "explode"])
def test_malformed_automation_editor_input_is_a_plain_400(admin_client, op):
    response = admin_client.post("/automations/new", data={"name": "Rule", "trigger": "", "match": "all",
                                                           "op": op})
    assert response.status_code == 400
    assert "reload the page and try again" in response.text
