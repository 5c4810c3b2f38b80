"""``db upgrade`` rewrites contacts' sources in words: "added by hand", "from Sam's mailbox", never an inbox id.

The database is built at the schema before (host at 9768618c5b70, contacts_import at ea013be41c7c, the others
at their newest), with contacts whose sources are written as the importer and the contact form wrote them then.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from host_app import create_app, migrating
from host_app.extensions import db
from host_app.testing import session_redis_url

BEFORE_THE_WORDS = {"host": "9768618c5b70", "contacts_import": "ea013be41c7c"}
OLD_AND_NEW = {
    "added@example.org": ("manual", "added by hand"),
    "sam@example.org": ("imap_inbox:3 (mailbox of Sam Seller)", "from Sam Seller's mailbox"),
    "odd@example.org": ("imap_inbox:12 (mailbox of Ann (Sales))", "from Ann (Sales)'s mailbox"),
    "unowned@example.org": ("imap_inbox:4 (box@team.example)", "from the mailbox box@team.example"),
    "bare@example.org": ("imap_inbox:5", "from a connected mailbox"),
    "other@example.org": ("a CSV file", "a CSV file"),  # not ours to rewrite
}


@pytest.fixture
def config(empty_database_url, tmp_path) -> dict:
    return {"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": empty_database_url,
            "INSTANCE_PATH": str(tmp_path / "instance"), "REDIS_URL": session_redis_url()}


def _sources(app) -> dict[str, str]:
    with app.app_context(), db.engine.connect() as connection:
        return dict(connection.execute(sa.text("SELECT email, source FROM contact")).all())


def test_upgrade_writes_every_contact_source_in_words(config):
    app = create_app(config)
    with app.app_context():
        for owner in migrating.owners(app):
            command.upgrade(migrating.alembic_config(owner), BEFORE_THE_WORDS.get(owner.name, "head"))
        with db.engine.begin() as connection:
            for email, (old, _) in OLD_AND_NEW.items():
                connection.execute(sa.text(
                    "INSERT INTO contact (email, name, name_edited, source, attributes, created_at) "
                    "VALUES (:email, '', false, :source, '{}', CURRENT_TIMESTAMP)"), {"email": email, "source": old})
        db.engine.dispose()

    app = create_app(config)
    assert set(migrating.pending(app)) == {"host", "contacts_import"}
    migrating.upgrade(app)
    assert migrating.pending(app) == []
    assert _sources(app) == {email: new for email, (_, new) in OLD_AND_NEW.items()}
