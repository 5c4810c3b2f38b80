"""``manage.py inboxes``: JSON on stdout, plain-words errors on stderr, non-zero exit codes."""
from __future__ import annotations

import json

from cryptography.fernet import Fernet

from host_app.extensions import db
from host_app.jobs import queue
from plugins.contacts_import.mailbox_setting import create_users_on
from plugins.imap_inbox.jobs import sync_job_id
from plugins.imap_inbox.models import ImapInbox
from tests.support.imap_helpers import OWNER_EMAIL, make_owner, message


def connect_args(mailbox, *extra):
    return ["inboxes", "connect", "--name", "Support", "--host", mailbox.host, "--port", str(mailbox.port),
            "--username", mailbox.username, "--password-stdin", "--owner", OWNER_EMAIL,
            "--ca-file", mailbox.ca_file, *extra]


def test_connect_prints_the_id_and_queues_the_first_sync(app, runner, mailbox, owner):
    result = runner.invoke(args=connect_args(mailbox, "--create-users"), input=mailbox.password + "\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with app.app_context():
        inbox = db.session.get(ImapInbox, data["id"])
        assert create_users_on(inbox.id) and inbox.owner.email == OWNER_EMAIL  # contacts_import's flag
        assert queue().job_ids == [sync_job_id(data["id"])]
    assert mailbox.password not in result.output


def test_connect_failure_exits_non_zero_with_reason_and_hint_on_stderr(app, runner, mailbox, owner):
    result = runner.invoke(args=connect_args(mailbox), input="Wrong-Password-9\n")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "rejected the user name or password" in result.stderr
    assert "Hint:" in result.stderr
    assert "Wrong-Password-9" not in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ImapInbox)) == 0


def test_connect_other_failures(app, runner, mailbox, dovecot, owner):
    result = runner.invoke(args=connect_args(mailbox) + ["--ca-file", dovecot.wrong_ca_file],
                           input=mailbox.password + "\n")
    assert result.exit_code == 1
    assert "Could not log in (certificate_untrusted)" in result.stderr
    assert "not signed by a certificate authority" in result.stderr
    result = runner.invoke(args=connect_args(mailbox), input="")
    assert result.exit_code == 1 and "No password on standard input" in result.stderr
    result = runner.invoke(args=connect_args(mailbox, "--security", "plain"), input=mailbox.password + "\n")
    assert result.exit_code == 2 and "plain" in result.stderr  # unencrypted is not even an option


def test_connect_with_an_unknown_owner(app, runner, mailbox):
    result = runner.invoke(args=connect_args(mailbox), input=mailbox.password + "\n")
    assert result.exit_code == 1 and "No agent with e-mail" in result.stderr


def test_sync_runs_in_the_foreground_and_prints_a_summary(app, runner, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = json.loads(runner.invoke(args=connect_args(mailbox), input=mailbox.password + "\n").stdout)["id"]
    result = runner.invoke(args=["inboxes", "sync", str(inbox_id)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["new_messages"] == 3
    assert f"inbox {inbox_id}: 3/3 messages" in result.stderr  # progress on stderr

    listing = runner.invoke(args=["inboxes", "list", "--json"])
    rows = json.loads(listing.stdout)
    assert rows[0]["messages"] == 3 and rows[0]["status"] == "ok" and rows[0]["owner"] == OWNER_EMAIL
    assert rows[0]["last_synced_at"].endswith("+00:00")  # UTC, said so, on every database
    # create_users is contacts_import's (the mail core's mailbox_details hook)
    assert set(rows[0]) == {"id", "name", "host", "port", "username", "owner", "auth", "provider", "status",
                            "enabled", "error", "last_synced_at", "messages", "create_users"}
    assert (rows[0]["auth"], rows[0]["provider"], rows[0]["create_users"]) == ("password", None, False)
    assert mailbox.password not in listing.output


def test_sync_failure_exits_non_zero(app, runner, mailbox, owner, dovecot):
    inbox_id = json.loads(runner.invoke(args=connect_args(mailbox), input=mailbox.password + "\n").stdout)["id"]
    dovecot.add_user(mailbox.username, "Changed-At-Provider-1")
    result = runner.invoke(args=["inboxes", "sync", str(inbox_id)])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "needs_attention"
    assert "rejected the user name or password" in result.stderr
    assert runner.invoke(args=["inboxes", "sync", "999"]).exit_code == 1


def test_sync_enqueue(app, runner, mailbox, owner):
    inbox_id = json.loads(runner.invoke(args=connect_args(mailbox), input=mailbox.password + "\n").stdout)["id"]
    result = runner.invoke(args=["inboxes", "sync", str(inbox_id), "--enqueue"])
    assert json.loads(result.stdout) == {"inbox_id": inbox_id, "job_id": None, "enqueued": False}  # already queued
    with app.app_context():
        queue().empty()
    result = runner.invoke(args=["inboxes", "sync", str(inbox_id), "--enqueue"])
    with app.app_context():
        assert json.loads(result.stdout)["job_id"] == sync_job_id(inbox_id)


def test_rotate_key(crm_app_factory, mailbox):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=[old])
    make_owner(app)
    assert app.test_cli_runner().invoke(args=connect_args(mailbox), input=mailbox.password + "\n").exit_code == 0
    rotating = crm_app_factory(IMAP_ENCRYPTION_KEYS=[new, old])
    result = rotating.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"reencrypted": 1}
    with rotating.app_context():
        token = bytes(db.session.scalar(db.select(ImapInbox.password_encrypted)))
    assert Fernet(new).decrypt(token) == mailbox.password.encode()
    broken = crm_app_factory(IMAP_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])
    result = broken.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 1 and "cannot be decrypted" in result.stderr
