"""Stored mail belongs to the mail core: it stays readable when the transport that brought it is gone."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from host_app.api import Contact, db
from host_app.testing import ADMIN_PASSWORD, log_in
from plugins.mail.models import Folder, Inbox, Message
from plugins.mail.testing import MailRows


def test_mail_of_a_transport_that_is_not_loaded_is_read_as_stored_mail(app, admin):
    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example", owner_id=admin)
        rows.received(box, ("Carla Customer", "carla@customer.example"))
        inbox_id = box.id
        # As if the plugin that synced it were disabled: no class knows this transport.
        for table in ("mail_inbox", "mail_folder"):
            db.session.execute(sa.text(f"UPDATE {table} SET transport = 'gone_transport'"))
        db.session.add(Contact(email="carla@customer.example", name="Carla"))
        db.session.commit()
        db.session.expunge_all()

        inbox = db.session.get(Inbox, inbox_id)
        assert type(inbox) is Inbox and inbox.transport == "gone_transport"
        assert [type(folder) for folder in inbox.folders] == [Folder, Folder]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        contact_id = db.session.scalar(sa.select(Contact.id))

    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    settings = client.get("/settings/contacts-import/")
    assert settings.status_code == 200 and "team@team.example" in settings.get_data(as_text=True)
    page = client.get(f"/contacts/{contact_id}")
    assert page.status_code == 200 and "message 1" in page.get_data(as_text=True)


def test_the_correspondents_of_one_inbox_are_an_audience_for_run_now(app, admin):
    from host_app.bulk_runs import NotRunnable, audience_contact_ids, audience_options

    with app.app_context():
        rows = MailRows()
        ours = rows.inbox("team@team.example", owner_id=admin)
        other = rows.inbox("other@team.example")
        rows.received(ours, ("Carla", "carla@customer.example"))
        rows.sent(ours, ("Dan", "dan@customer.example"))
        rows.received(other, ("Eve", "eve@customer.example"))
        contacts = {e: Contact(email=e) for e in ("carla@customer.example", "dan@customer.example",
                                                   "eve@customer.example", "team@team.example")}
        db.session.add_all(contacts.values())
        db.session.commit()
        options = dict(audience_options())
        assert options[f"inbox:{ours.id}"] == "Inbox: Ada Admin <team@team.example>"
        assert options[f"inbox:{other.id}"] == "Inbox: other@team.example"
        found = audience_contact_ids(f"inbox:{ours.id}")
        assert found == {contacts["carla@customer.example"].id, contacts["dan@customer.example"].id}
        with pytest.raises(NotRunnable, match="Inbox has no '999'"):
            audience_contact_ids("inbox:999")


def _planner_rows() -> float:
    return db.session.scalar(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass('mail_message')"))


def _statistics_never_gathered() -> None:
    """The message tables as a new database has them: never analyzed. Other tests' imports analyze them, and
    TRUNCATE (committed on its own) is what forgets it."""
    db.session.execute(sa.text("TRUNCATE mail_message CASCADE"))
    db.session.commit()
    assert _planner_rows() < 0


def _add_mail(rows: MailRows, box: Inbox, count: int) -> None:
    for i in range(count):
        rows.received(box, (f"Person {i}", f"person{i}@customer.example"))
    # Counts reach pg_stat_user_tables when the connection goes idle, at most once a second unless forced.
    db.session.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    db.session.commit()


@pytest.mark.postgresql_only  # SQLite plans without statistics
def test_readers_refresh_stale_statistics_of_the_message_tables_once(app, admin, monkeypatch):
    from plugins.mail import statistics

    monkeypatch.setattr(statistics, "MIN_NEW_MESSAGES", 20)
    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example", owner_id=admin)
        _statistics_never_gathered()  # what a first sync starts from
        _add_mail(rows, box, 30)

        assert statistics.refresh_if_stale(box.id, None) is True
        assert _planner_rows() == 30
        # The next reader of the same run finds them current; a small backlog does not make them stale.
        assert statistics.refresh_if_stale(box.id, 0) is False
        newest = db.session.scalar(sa.select(sa.func.max(Message.id)))
        _add_mail(rows, box, 10)
        assert statistics.refresh_if_stale(box.id, newest) is False
        assert _planner_rows() == 30

        _add_mail(rows, box, 15)  # 25 rows more than gathered: stale again
        assert statistics.refresh_if_stale(box.id, 0) is True
        assert _planner_rows() == 55


@pytest.mark.postgresql_only
def test_statistics_never_gathered_are_gathered_before_a_small_backlog_is_read(app, admin):
    """Before autovacuum's first ANALYZE a small database plans every join as over a row or two: the incremental
    import's query walked the address table once per address row (4 s for 1,000 new messages of 3,000)."""
    from plugins.mail import statistics

    with app.app_context():
        rows = MailRows()
        box = rows.inbox("team@team.example", owner_id=admin)
        _statistics_never_gathered()
        _add_mail(rows, box, 30)
        newest = db.session.scalar(sa.select(sa.func.max(Message.id)))

        assert statistics.refresh_if_stale(box.id, newest - 5) is True
        assert _planner_rows() == 30
        assert statistics.refresh_if_stale(box.id, newest - 5) is False
