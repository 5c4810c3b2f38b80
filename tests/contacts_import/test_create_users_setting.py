"""Create users belongs to contacts_import: on the inbox form, ``inboxes connect`` and ``list --json`` only with it.

The end-to-end behaviour (importing when it is on, the whole mailbox when it is switched on later) is in
test_contacts_import_e2e.py; here, where the setting shows and where it is kept.
"""
from __future__ import annotations

import json
import re

import pytest

from host_app.extensions import db
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from plugins.contacts_import.models import ImportState

ADMIN_EMAIL = "admin@team.example"
WARNING = "Contacts will be created from the people in this mailbox (senders and recipients)"


def connect_args(name: str, *extra: str) -> list[str]:
    return ["inboxes", "connect", "--name", name, "--host", "imap.example.com", "--username",
            f"{name.lower()}@example.com", "--password-stdin", "--owner", ADMIN_EMAIL, "--no-check", *extra]


def connect(app, name: str, *extra: str) -> int:
    result = app.test_cli_runner().invoke(args=connect_args(name, *extra), input="secret-1\n")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def listed(app) -> dict[int, dict]:
    result = app.test_cli_runner().invoke(args=["inboxes", "list", "--json"])
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in json.loads(result.stdout)}


def checkbox(page: str) -> str | None:
    match = re.search(r'<input[^>]*id="create_users"[^>]*>', page)
    return match.group(0) if match else None


@pytest.fixture
def apps(crm_app_factory):
    """The app with every plugin, and one with contacts_import disabled, on the same database (with an admin)."""
    with_plugin = crm_app_factory()
    with_plugin.config["TEST_ADMIN_ID"] = make_agent(with_plugin, ADMIN_EMAIL, ADMIN_PASSWORD, admin=True)
    return with_plugin, crm_app_factory(disabled=["contacts_import"])


def test_the_flag_the_json_key_and_the_list_note_are_there_with_contacts_import_only(apps):
    app, without = apps
    assert "--create-users" in app.test_cli_runner().invoke(args=["inboxes", "connect", "--help"]).output
    on, off = connect(app, "Sales", "--create-users"), connect(app, "Support")
    with app.app_context():
        assert db.session.get(ImportState, on).create_users is True
        assert db.session.get(ImportState, off) is None  # off is what no state means
    rows = listed(app)
    assert (rows[on]["create_users"], rows[off]["create_users"]) == (True, False)
    page = log_in(app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).get("/settings/inboxes/").get_data(as_text=True)
    assert re.search(rf'id="inbox-{on}".*?imap.example.com:993 · creates contacts</div>', page, re.S)
    assert page.count("creates contacts") == 1

    assert "--create-users" not in without.test_cli_runner().invoke(args=["inboxes", "connect", "--help"]).output
    result = without.test_cli_runner().invoke(args=connect_args("Billing", "--create-users"), input="secret-1\n")
    assert result.exit_code == 2 and "No such option '--create-users'" in result.output
    rows = listed(without)
    assert set(rows) == {on, off} and all("create_users" not in row for row in rows.values())
    page = log_in(without.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).get("/settings/inboxes/").get_data(as_text=True)
    assert f'id="inbox-{on}"' in page and "creates contacts" not in page


def test_the_checkbox_is_on_the_inbox_form_with_contacts_import_only(apps):
    app, without = apps
    on, off = connect(app, "Sales", "--create-users"), connect(app, "Support")
    client = log_in(app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    page = client.get("/settings/inboxes/new").get_data(as_text=True)
    assert "checked" not in checkbox(page) and WARNING in page
    assert re.search(r'<label class="check"><input[^>]*id="create_users"[^>]*> Create users</label>', page)
    assert "checked" in checkbox(client.get(f"/settings/inboxes/{on}/edit").get_data(as_text=True))
    assert "checked" not in checkbox(client.get(f"/settings/inboxes/{off}/edit").get_data(as_text=True))

    client = log_in(without.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    for path in ("/settings/inboxes/new", f"/settings/inboxes/{on}/edit"):
        page = client.get(path).get_data(as_text=True)
        assert 'id="extra_folders"' in page  # the form itself is there
        assert checkbox(page) is None and "Create users" not in page and WARNING not in page


def test_saving_the_edit_form_without_contacts_import_leaves_create_users_as_it_was(apps):
    app, without = apps
    inbox_id = connect(app, "Sales")
    form = {"name": "Sales renamed", "provider": "other", "host": "imap.example.com", "username": "sales@example.com",
            "password": "", "port": "993", "security": "ssl", "ca_file": "", "extra_folders": "",
            "owner_id": str(app.config["TEST_ADMIN_ID"]), "create_users": "y"}  # a stale form's box is ignored
    client = log_in(without.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    assert client.post(f"/settings/inboxes/{inbox_id}/edit", data=form).status_code == 302
    row = listed(app)[inbox_id]
    assert row["name"] == "Sales renamed" and row["create_users"] is False
