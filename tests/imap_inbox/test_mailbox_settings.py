"""Another plugin's settings of a mailbox on imap_inbox's form, ``connect`` command and ``list --json``.

imap_inbox knows none of them: a throwaway plugin keeping "Archive mail" per inbox reaches them only
through the mail core's hooks (mailbox_form_fields, mailbox_cli_options, save_mailbox_settings,
mailbox_details). contacts_import's Create users, the real one, is tested in tests/contacts_import.
"""
from __future__ import annotations

import json
import re
import sys

import pytest

from host_app import hookimpl
from host_app.extensions import db
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from plugins.imap_inbox import service
from plugins.imap_inbox.models import ImapInbox
from tests.support.throwaway import throwaway_plugin

ARCHIVE_PLUGIN = """
import click
from wtforms import BooleanField

from host_app import hookimpl
from plugins.mail.mailbox_settings import MailboxDetail, MailboxField

archived = {}  # inbox id -> on; a real plugin keeps a table of its own
saved = []


@hookimpl
def mailbox_form_fields(inbox_id):
    return [MailboxField("archive_mail", BooleanField(
        "Archive mail", description="Keep a copy of every e-mail in the archive.",
        default=archived.get(inbox_id, False)))]


@hookimpl
def mailbox_cli_options(app):
    return [click.Option(["--archive-mail"], is_flag=True, help="Keep a copy of every e-mail in the archive.")]


@hookimpl
def save_mailbox_settings(inbox_id, values):
    saved.append((inbox_id, dict(values)))
    if values.get("archive_mail") == "refuse":
        raise RuntimeError("the archive is full")
    if "archive_mail" not in values or archived.get(inbox_id, False) == bool(values["archive_mail"]):
        return []
    archived[inbox_id] = bool(values["archive_mail"])
    return ["archive_mail"]


@hookimpl
def mailbox_details(inbox_ids):
    return [MailboxDetail(inbox_id, "archive_mail", archived.get(inbox_id, False),
                          note="archives its mail" if archived.get(inbox_id) else None) for inbox_id in inbox_ids]
"""
ADMIN_EMAIL = "admin@team.example"
# The transport and the mail core, without contacts_import (whose Create users would show too).
TRANSPORT = {"mail": "plugins.mail", "imap_inbox": "plugins.imap_inbox"}


@pytest.fixture
def archive_app(crm_app_factory):
    with throwaway_plugin("archive", ARCHIVE_PLUGIN, depends=["mail"]) as plugin:
        app = crm_app_factory(plugins={**TRANSPORT, **plugin})
        app.config["TEST_ADMIN_ID"] = make_agent(app, ADMIN_EMAIL, ADMIN_PASSWORD, admin=True, name="Ada Admin")
        yield app


def _archive():
    """The throwaway plugin's module, with what it stored."""
    return sys.modules["throwaway_archive.plugin"]


def _inbox(app, name="Support", **settings) -> int:
    with app.app_context():
        return service.create_inbox(name=name, host="imap.example.com", port=993, security="ssl",
                                    username=f"{name.lower()}@example.com", password="secret-1",
                                    owner_id=app.config["TEST_ADMIN_ID"], settings=settings, check=False).id


def _form(app, **extra) -> dict:
    """The edit form of the inbox ``_inbox`` connects, as submitted with nothing else changed."""
    return {"name": "Support", "provider": "other", "host": "imap.example.com", "username": "support@example.com",
            "password": "", "port": "993", "security": "ssl", "ca_file": "",
            "owner_id": str(app.config["TEST_ADMIN_ID"]), "extra_folders": "", **extra}


def _checkbox(page: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*id="{name}"[^>]*>', page)
    return match.group(0) if match else None


def test_hook_mailbox_form_fields__another_plugin_s_field_is_on_the_connect_and_edit_forms(archive_app):
    client = log_in(archive_app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    page = client.get("/settings/inboxes/new").get_data(as_text=True)
    box = _checkbox(page, "archive_mail")
    assert box is not None and "checked" not in box
    assert re.search(r'<label class="check"><input[^>]*id="archive_mail"[^>]*> Archive mail</label>', page)
    assert "Keep a copy of every e-mail in the archive." in page
    assert page.index('id="owner_id"') < page.index('id="archive_mail"') < page.index('id="extra_folders"')
    assert _checkbox(page, "create_users") is None  # contacts_import is not loaded here

    inbox_id = _inbox(archive_app, archive_mail=True)
    page = client.get(f"/settings/inboxes/{inbox_id}/edit").get_data(as_text=True)
    assert "checked" in _checkbox(page, "archive_mail")  # the plugin's current value


def test_hook_save_mailbox_settings__with_the_inbox_and_named_among_its_changes(archive_app):
    archive = _archive()
    heard = []

    class Listener:
        @hookimpl
        def mailbox_settings_changed(self, inbox_id, changed):
            heard.append(changed)

    archive_app.extensions["plugins"].pm.register(Listener(), name="test_listener")
    client = log_in(archive_app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    inbox_id = _inbox(archive_app, archive_mail=True)
    assert archive.saved == [(inbox_id, {"archive_mail": True})] and archive.archived == {inbox_id: True}
    assert heard == []  # connecting is no change of settings

    # The edit page, box unticked: no login check (the server did not change), the setting is off.
    response = client.post(f"/settings/inboxes/{inbox_id}/edit", data=_form(archive_app))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert archive.archived[inbox_id] is False and heard == [["archive_mail"]]
    client.post(f"/settings/inboxes/{inbox_id}/edit", data=_form(archive_app, name="Renamed"))
    assert heard[-1] == ["name"]  # the box stayed unticked: no change of it

    # A plugin that cannot save its setting fails the save: the inbox is not connected half-way.
    with archive_app.app_context(), pytest.raises(RuntimeError, match="archive is full"):
        _inbox(archive_app, name="Refused", archive_mail="refuse")
    with archive_app.app_context():
        db.session.rollback()
        assert db.session.scalar(db.select(ImapInbox.id).where(ImapInbox.name == "Refused")) is None


def test_hook_mailbox_cli_options__inboxes_connect_takes_another_plugin_s_option(archive_app, crm_app_factory):
    runner = archive_app.test_cli_runner()
    args = ["inboxes", "connect", "--name", "Support", "--host", "imap.example.com", "--username",
            "support@example.com", "--password-stdin", "--owner", ADMIN_EMAIL, "--no-check"]
    assert "--archive-mail" in runner.invoke(args=["inboxes", "connect", "--help"]).output
    result = runner.invoke(args=args + ["--archive-mail"], input="secret-1\n")
    assert result.exit_code == 0, result.output
    assert _archive().archived == {json.loads(result.stdout)["id"]: True}

    without = crm_app_factory(plugins=TRANSPORT)  # the same command, in an app without the plugin
    result = without.test_cli_runner().invoke(args=args + ["--archive-mail"], input="secret-1\n")
    assert result.exit_code == 2 and "No such option '--archive-mail'" in result.output


def test_hook_mailbox_details__keys_of_inboxes_list_json_and_notes_on_the_list_page(archive_app, crm_app_factory):
    on, off = _inbox(archive_app, name="On", archive_mail=True), _inbox(archive_app, name="Off")
    result = archive_app.test_cli_runner().invoke(args=["inboxes", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert (rows[on]["archive_mail"], rows[off]["archive_mail"]) == (True, False)
    assert rows[on]["name"] == "On"  # the transport's own keys stay
    client = log_in(archive_app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    page = client.get("/settings/inboxes/").get_data(as_text=True)
    assert re.search(rf'id="inbox-{on}".*?imap.example.com:993 · archives its mail</div>', page, re.S)
    assert page.count("archives its mail") == 1

    without = crm_app_factory(plugins=TRANSPORT)
    rows = json.loads(without.test_cli_runner().invoke(args=["inboxes", "list", "--json"]).stdout)
    assert rows and all("archive_mail" not in row for row in rows)
