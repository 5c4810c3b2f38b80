"""A database of the last release before the mail core, holding real synced mail, upgrades in place.

The old release's code is taken from git (LEGACY_COMMIT) and run in a child process against a real
Dovecot: it connects an inbox, syncs it, imports contacts and matches a reply. The current code then
runs ``db upgrade`` on that database and syncs again: every message, checkpoint, contact, response and
Create users setting is kept with its id, and the sync fetches only the one message that arrived since.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from host_app import create_app, migrating
from host_app.extensions import db
from plugins.mail import search
from tests.support import ROOT
from tests.support.imap_helpers import message, sync

# main before the mail core: imap_inbox owned the mail (imap_inbox at e5c2a7f4b8d1).
LEGACY_COMMIT = "9d11129eb97139df2ce3eda6eec5f459ec54c894"
TEAM_KEY = Fernet.generate_key().decode()

# Runs inside the old release (its host_app and plugins first on sys.path).
LEGACY_SYNC = """
import json, sys
from host_app import create_app, migrating
from host_app.auth import create_agent
from host_app.extensions import db

config = json.loads(sys.argv[1])
app = create_app(config)
migrating.upgrade(app)
with app.app_context():
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox

    owner = create_agent("owner@team.example", "Olivia Owner", "owner-password-1")
    box = config["MAILBOX"]
    inbox = service.create_inbox(name="Sales desk", host=box["host"], port=box["port"], security="ssl",
                                 username=box["username"], password=box["password"], owner_id=owner.id,
                                 ca_file=box["ca_file"], create_users=True)
    result = sync_inbox(inbox.id)
    print(json.dumps({"inbox_id": inbox.id, "sync": result,
                      "plugins": app.extensions["plugins"].load_order}))
"""

MESSAGE_COLUMNS = ("id", "folder_id", "inbox_id", "uid", "message_id", "dedup_key", "direction", "subject")
FOLDER_CHECKPOINT = ("uidvalidity", "uidnext", "low_uid", "high_uid", "initial_done")
CREATE_USERS_NOW = "SELECT inbox_id, create_users FROM contacts_import_inbox WHERE create_users"


@pytest.fixture
def legacy_tree(tmp_path) -> Path:
    tree = tmp_path / "legacy"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", LEGACY_COMMIT, "host_app", "plugins"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _snapshot(connection, tables: dict[str, str]) -> dict:
    messages = sorted(map(tuple, connection.execute(sa.text(
        f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM {tables['message']} ORDER BY id"))))
    addresses = sorted(map(tuple, connection.execute(sa.text(
        f"SELECT message_pk, role, email FROM {tables['address']}"))))
    folders = sorted(map(tuple, connection.execute(sa.text(
        f"SELECT f.id, f.name, f.role, f.message_count, {', '.join('c.' + c for c in FOLDER_CHECKPOINT)} "
        f"FROM {tables['folder']} f JOIN {tables['checkpoint']} c ON c.id = f.id"))))
    contacts = sorted(map(tuple, connection.execute(sa.text("SELECT id, email FROM contact"))))
    responses = sorted(map(tuple, connection.execute(sa.text(
        "SELECT reply_pk, our_pk, contact_email FROM reply_condition_response"))))
    states = sorted(map(tuple, connection.execute(sa.text(
        "SELECT inbox_id, last_message_id FROM contacts_import_inbox"))))
    # Create users: the inbox's column before the mail core, contacts_import's since.
    create_users = sorted((row[0], bool(row[1])) for row in connection.execute(sa.text(tables["create_users"])))
    return {"messages": messages, "addresses": addresses, "folders": folders, "contacts": contacts,
            "responses": responses, "import_states": states, "create_users": create_users}


def test_a_database_from_before_the_mail_core_keeps_its_mail_and_syncs_only_what_is_new(
        mailbox, legacy_tree, empty_database_url, redis_url, tmp_path):
    database_url = empty_database_url
    carla = "Carla Customer <carla@customer.example>"
    mailbox.write("Sent", [message(1, sender=mailbox.username, to=carla, subject="Our offer",
                                   message_id="<offer@team.example>")])
    reply = message(2, to=mailbox.username, subject="Re: Our offer", in_reply_to="<offer@team.example>")
    mailbox.write("INBOX", [reply, *[message(n, to=mailbox.username) for n in range(3, 12)]])
    config = {"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "x", "INSTANCE_PATH": str(tmp_path / "inst"),
              "REDIS_URL": redis_url, "RQ_QUEUE": f"legacy-{os.getpid()}", "IMAP_ENCRYPTION_KEYS": [TEAM_KEY],
              # The test Dovecot listens on 127.0.0.1, which the app refuses by default (as host_app.testing says).
              "IMAP_BLOCK_PRIVATE_HOSTS": False, "IMAP_CA_DIR": str(Path(mailbox.ca_file).parent)}
    box = {"host": mailbox.host, "port": mailbox.port, "username": mailbox.username,
           "password": mailbox.password, "ca_file": mailbox.ca_file}
    # The old release knows no mail plugin; the installed package would offer today's.
    legacy_config = {**config, "DISABLED_PLUGINS": ["mail"], "MAILBOX": box}
    run = subprocess.run([sys.executable, "-c", LEGACY_SYNC, json.dumps(legacy_config)], cwd=legacy_tree,
                         env={**os.environ, "PYTHONPATH": str(legacy_tree)}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    legacy = json.loads(run.stdout.strip().splitlines()[-1])
    assert "mail" not in legacy["plugins"] and legacy["sync"]["new_messages"] == 11

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        before = _snapshot(connection, {"message": "imap_message", "address": "imap_message_address",
                                        "folder": "imap_folder", "checkpoint": "imap_folder",
                                        "create_users": "SELECT id, create_users FROM imap_inbox"})
    engine.dispose()
    assert len(before["messages"]) == 11 and before["responses"] and before["contacts"] and before["import_states"]
    assert before["create_users"] == [(legacy["inbox_id"], True)]

    app = create_app(config)
    assert "mail" in migrating.pending(app)  # behind: the legacy release knew no mail core
    migrating.upgrade(app)
    assert migrating.pending(app) == []
    with app.app_context(), db.engine.connect() as connection:
        after = _snapshot(connection, {"message": "mail_message", "address": "mail_message_address",
                                       "folder": "mail_folder", "checkpoint": "imap_folder",
                                       "create_users": CREATE_USERS_NOW})
        tables = set(sa.inspect(connection).get_table_names())
        sources = set(connection.execute(sa.text("SELECT source FROM contact")).scalars())
    assert after == before
    # The imported contacts' source reads in words now, not as the inbox's id.
    assert any(source.startswith("from ") for source in sources), sources
    assert not any(source.startswith("imap_inbox:") for source in sources), sources
    assert {"imap_message", "imap_message_address", "imap_sync_run"}.isdisjoint(tables)
    # Attachments are listed from the next sync on: the mail already stored is looked at from id 0.
    assert "mail_message_attachment" in tables
    with app.app_context(), db.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT id, attachments_listed_id FROM imap_inbox")).all() == [
            (legacy["inbox_id"], 0)]

    # The password still decrypts, the checkpoint holds: only the newcomer is fetched.
    mailbox.write("INBOX", [message(12, to=mailbox.username, subject="Newcomer")])
    result = sync(app, legacy["inbox_id"])
    assert (result["status"], result["new_messages"]) == ("ok", 1)
    with app.app_context(), db.engine.connect() as connection:
        final = _snapshot(connection, {"message": "mail_message", "address": "mail_message_address",
                                       "folder": "mail_folder", "checkpoint": "imap_folder",
                                       "create_users": CREATE_USERS_NOW})
    kept = [row for row in final["messages"] if row[0] <= max(r[0] for r in before["messages"])]
    assert kept == before["messages"]
    assert [row[7] for row in final["messages"] if row not in kept] == ["Newcomer"]
    assert final["responses"] == before["responses"]
    assert final["contacts"][:len(before["contacts"])] == before["contacts"]
    with app.app_context():
        # The full-text index holds the upgraded mail and the newcomer the sync's bulk insert indexed itself
        # (migration e3b9d7f1a5c2 on SQLite), and nothing else.
        assert [search.plain(hit.subject) for hit in search.search_messages("newcomer")] == ["Newcomer"]
        assert sorted(search.plain(hit.subject) for hit in search.search_messages("offer")) == [
            "Our offer", "Re: Our offer"]
        if db.engine.dialect.name == "sqlite":
            assert db.session.execute(sa.text("SELECT count(*) FROM mail_search_bulk_insert")).scalar() == 0
            db.session.execute(sa.text(
                "INSERT INTO mail_message_search (mail_message_search, rank) VALUES ('integrity-check', 1)"))
        db.session.remove()
        db.engine.dispose()
