"""Create users moves from the mail core's mail_inbox to contacts_import's table on ``db upgrade``, nothing lost.

The databases are built at the schema before the move (mail at 2e5a044214fe, contacts_import at
b40b9424aa45, the others at their newest), with inboxes written as that schema had them.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from host_app import create_app, migrating
from host_app.extensions import db
from host_app.testing import session_redis_url
from plugins.contacts_import.mailbox_setting import create_users_on
from plugins.mail.models import Inbox

BEFORE_THE_MOVE = {"mail": "2e5a044214fe", "contacts_import": "b40b9424aa45"}
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def config(empty_database_url, tmp_path) -> dict:
    return {"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": empty_database_url,
            "INSTANCE_PATH": str(tmp_path / "instance"), "REDIS_URL": session_redis_url(),
            "WTF_CSRF_ENABLED": False}


def _database_before_the_move(config) -> list[int]:
    """Four inboxes (their ids): Create users on, on, off, off."""
    app = create_app(config)
    with app.app_context():
        for owner in migrating.owners(app):
            command.upgrade(migrating.alembic_config(owner), BEFORE_THE_MOVE.get(owner.name, "head"))
        inboxes = sa.table("mail_inbox", *(sa.column(name) for name in (
            "transport", "name", "email", "username", "create_users", "enabled", "status", "progress_done",
            "progress_total", "message_count", "created_at", "updated_at")))
        states = sa.table("contacts_import_inbox", *(sa.column(name) for name in (
            "inbox_id", "policy", "last_message_id", "status", "progress_done", "progress_total", "last_created",
            "total_created", "updated_at")))
        ids = []
        with db.engine.begin() as connection:
            for n, create_users in enumerate((True, True, False, False), 1):
                ids.append(connection.execute(sa.insert(inboxes).values(
                    transport="stored", name=f"Inbox {n}", email=f"box{n}@team.example",
                    username=f"box{n}@team.example", create_users=create_users, enabled=True, status="ok",
                    progress_done=0, progress_total=0, message_count=0, created_at=NOW, updated_at=NOW,
                ).returning(sa.column("id"))).scalar_one())
            # The first was imported already, the fourth has a policy but Create users off; the others never ran.
            for inbox_id, policy, watermark in ((ids[0], "we_wrote", 41), (ids[3], "we_wrote", None)):
                connection.execute(sa.insert(states).values(
                    inbox_id=inbox_id, policy=policy, last_message_id=watermark, status="done", progress_done=0,
                    progress_total=0, last_created=3, total_created=3, updated_at=NOW))
        db.engine.dispose()
    return ids


def _settings(app) -> dict[int, tuple]:
    with app.app_context(), db.engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT inbox_id, create_users, policy, last_message_id FROM contacts_import_inbox"))
        return {row[0]: (bool(row[1]), row[2], row[3]) for row in rows}


def _mail_inbox_columns(app) -> set[str]:
    with app.app_context(), db.engine.connect() as connection:
        return {column["name"] for column in sa.inspect(connection).get_columns("mail_inbox")}


def test_upgrade_moves_create_users_to_contacts_import_keeping_every_value(config):
    first, second, third, fourth = _database_before_the_move(config)
    app = create_app(config)
    assert set(migrating.pending(app)) == {"mail", "contacts_import"}
    migrating.upgrade(app)
    assert migrating.pending(app) == []
    assert _settings(app) == {
        first: (True, "we_wrote", 41),  # its import state keeps its policy and watermark
        second: (True, "any", None),  # a state made for it, as the model's defaults are
        fourth: (False, "we_wrote", None),
    }
    assert "create_users" not in _mail_inbox_columns(app)
    with app.app_context():
        assert [create_users_on(inbox_id) for inbox_id in (first, second, third, fourth)] == [True, True, False, False]
        db.engine.dispose()


def test_with_contacts_import_disabled_the_values_wait_in_mail_inbox_until_it_is_enabled(config):
    first, second, third, _ = _database_before_the_move(config)
    without = create_app({**config, "DISABLED_PLUGINS": ["contacts_import"]})
    migrating.upgrade(without)
    assert migrating.pending(without) == []
    assert "create_users" in _mail_inbox_columns(without)
    # The mail core's model no longer writes the column: the database's default fills it.
    with without.app_context():
        db.session.add(Inbox(name="Connected meanwhile", email="new@team.example", username="new@team.example"))
        db.session.commit()
        new_id = db.session.scalar(sa.select(Inbox.id).where(Inbox.email == "new@team.example"))
        db.engine.dispose()

    app = create_app(config)
    assert migrating.pending(app) == ["contacts_import"]
    migrating.upgrade(app)
    settings = _settings(app)
    assert settings[first] == (True, "we_wrote", 41) and settings[second] == (True, "any", None)
    assert new_id not in settings and third not in settings
    assert "create_users" not in _mail_inbox_columns(app)
    with app.app_context():
        db.engine.dispose()
