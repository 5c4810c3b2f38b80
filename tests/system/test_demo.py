"""``make demo``: its set-up (everything but the blocking web server) gives a synced inbox with timelines."""
from __future__ import annotations

import sqlalchemy as sa

from host_app.extensions import db
from host_app.models import Contact
from host_app.testing import log_in


def test_demo_setup_syncs_the_sample_mailbox_onto_timelines(crm_app_factory, redis_url, tmp_path):
    from host_app.jobs import make_worker
    from plugins.imap_inbox.demo import AGENT, INBOX_NAME, SPARE_MAILBOX, setup_demo
    from plugins.imap_inbox.models import ImapInbox
    from plugins.mail.models import Message

    # The database the suite runs on (SQLite copy or the PostgreSQL test database), emptied for this test.
    database_url = crm_app_factory().config["SQLALCHEMY_DATABASE_URI"]
    demo = setup_demo(instance_path=tmp_path / "demo", database_url=database_url, redis_url=redis_url,
                      queue="demo-test", n_inbox=90, n_sent=30, correspondents=20,
                      extra_config={"TESTING": True, "WTF_CSRF_ENABLED": False})
    try:
        assert (tmp_path / "demo" / "config.py").is_file()
        app = demo.app
        with app.app_context():
            assert make_worker(app, simple=True).work(burst=True)
            inbox = db.session.get(ImapInbox, demo.inbox_id)
            assert (inbox.name, inbox.status, inbox.error) == (INBOX_NAME, "ok", None)
            stored = db.session.scalar(sa.select(sa.func.count(Message.id)).where(Message.inbox_id == inbox.id))
            assert stored == inbox.message_count == demo.messages
            contacts = {c.email: c for c in db.session.scalars(db.select(Contact))}
            assert len(contacts) >= 10, "Create users should have made contacts from the mailbox"
            assert not any(email.startswith(("no-reply@", "noreply@")) for email in contacts)
            zoe = contacts["zoe.mueller@alpenglas.example"]
            assert zoe.name == "Zoë Müller"
            # Her reply two days ago answered our offer: the sample automation tagged her.
            assert "replied" in zoe.tags
            zoe_id = zoe.id
            db.session.remove()

        # Log in with the printed credentials; the agent sees Zoë's thread with the owner's name as its source.
        agent = log_in(app.test_client(), demo.agent_email, demo.agent_password)
        page = agent.get(f"/contacts/{zoe_id}").get_data(as_text=True)
        assert page.count("Angebot für 500 Weingläser") == 4
        assert f'<span class="source">{AGENT[1]}</span>' in page and INBOX_NAME not in page
        admin = log_in(app.test_client(), demo.admin_email, demo.admin_password)
        assert INBOX_NAME in admin.get("/settings/inboxes/").get_data(as_text=True)

        # The second, unconnected mailbox the demo prints connects with exactly what it prints.
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count(ImapInbox.id))) == 1
        form = {"name": "Support", "host": demo.server.host, "port": str(demo.server.imaps_port), "security": "ssl",
                "username": demo.spare_mailbox, "password": demo.spare_password, "ca_file": demo.server.ca_file,
                "owner_id": str(agent_id(app, demo.agent_email))}
        response = admin.post("/settings/inboxes/new", data=form)
        assert response.status_code == 302, response.get_data(as_text=True)
        with app.app_context():
            spare = db.session.scalars(sa.select(ImapInbox).where(ImapInbox.username == SPARE_MAILBOX)).one()
            assert make_worker(app, simple=True).work(burst=True)
            db.session.refresh(spare)
            assert (spare.status, spare.error) == ("ok", None)
            assert spare.message_count > 0
            db.session.remove()
    finally:
        demo.stop()
    assert not demo.server.running and not demo.base_dir.exists()


def agent_id(app, email: str) -> int:
    from host_app.models import Agent

    with app.app_context():
        agent_id = db.session.scalar(sa.select(Agent.id).where(Agent.email == email))
        db.session.remove()
        return agent_id


def test_demo_never_wipes_a_folder_it_did_not_make(tmp_path):
    import pytest

    from plugins.imap_inbox.demo import setup_demo

    precious = tmp_path / "instance"
    precious.mkdir()
    (precious / "crm.sqlite").write_text("a real installation's data")
    with pytest.raises(SystemExit, match="was not made by the demo"):
        setup_demo(instance_path=precious)
    assert (precious / "crm.sqlite").read_text() == "a real installation's data"
